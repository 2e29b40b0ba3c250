import sys
sys.path.insert(0, "/work/main/bench")
import numpy as np
from tokenizers import Tokenizer
from python_eval import TASKS, make_batches, read_tsv
from paired_speed import session
a, b = sys.argv[1], sys.argv[2]; task = sys.argv[3] if len(sys.argv) > 3 else 'sst2'
tok = Tokenizer.from_file(f"/work/shared/models/minilm-l6-{task}/tokenizer.json")
tok.enable_truncation(max_length=128); tok.no_padding()
sub, lc, tc = TASKS[task]
_, texts = read_tsv(f"/work/shared/data/glue/{sub}/dev.tsv", lc, tc)
sa, sb = session(a, 0, False), session(b, 0, False)
names = [i.name for i in sa.get_inputs()]
worst = 0; agree = 0; n = 0
for f, _ in make_batches(tok, texts, 32, names, np):
    x, y = sa.run(None, f)[0], sb.run(None, f)[0]
    worst = max(worst, float(np.abs(x - y).max())); agree += int((x.argmax(1) == y.argmax(1)).sum()); n += len(x)
print(f"max |diff| {worst:.3g}, argmax agree {agree}/{n}")
