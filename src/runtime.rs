//! Running models with ONNX Runtime: finding and loading its shared library, opening sessions on
//! CPU or CUDA (never silently falling back), and running one tokenized batch.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

/// The ONNX Runtime release this tool is built and tested against.
pub const ORT_VERSION: &str = "1.32.0";
/// The library's file name, as the PyPI wheel `onnxruntime==1.32.0` has it in `onnxruntime/capi/`.
const LIB_NAME: &str = if cfg!(windows) {
    "onnxruntime.dll"
} else if cfg!(target_os = "macos") {
    "libonnxruntime.1.32.0.dylib"
} else {
    "libonnxruntime.so.1.32.0"
};
/// The commands that install the library: into the project, or into a pip install's environment.
pub const FIX_COMMAND: &str = "make setup   (or: scripts/install_ort.sh); for onnx-compress installed with pip: pip install onnxruntime==1.32.0 in its environment";

/// Where the project-local install lives, relative to the project root.
pub const LOCAL_DIR: &str = ".ort/lib";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl crate::options::Named for Device {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Device::Cpu, "cpu", "ONNX Runtime's CPU provider"),
        (
            Device::Cuda,
            "cuda",
            "ONNX Runtime's CUDA provider (an error where unavailable, never a fallback)",
        ),
    ];
}

/// Candidate project roots: the ancestors of the running executable, the current folder and
/// the folder this crate was built from.
fn project_roots(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(exe) = exe {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots
}

/// The site-packages folders of the Python environment an executable is installed in (`pip
/// install`, a venv, `--user`, pipx, conda): the executable sits in `PREFIX/bin` (Windows:
/// `PREFIX\Scripts`) and the packages in `PREFIX/lib{,64}/python*/{site,dist}-packages` (Windows:
/// `PREFIX\Lib\site-packages`, or `PREFIX\site-packages` for `--user`). Only folders that exist.
fn environment_site_packages(exe: &Path) -> Vec<PathBuf> {
    let Some(prefix) = exe.parent().and_then(Path::parent) else {
        return vec![];
    };
    if cfg!(windows) {
        return [prefix.join("Lib").join("site-packages"), prefix.join("site-packages")]
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
    }
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
            .map(|e| e.path())
            .collect();
        // Newest first where several versions share a prefix (python3.9 < python3.11 by number).
        pythons.sort_by_key(|p| std::cmp::Reverse(python_version(p)));
        for p in pythons {
            out.extend(
                ["site-packages", "dist-packages"]
                    .map(|s| p.join(s))
                    .into_iter()
                    .filter(|d| d.is_dir()),
            );
        }
    }
    out
}

/// `python3.11` -> (3, 11); anything else sorts last.
fn python_version(dir: &Path) -> (u32, u32) {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let mut parts = name
        .trim_start_matches("python")
        .split('.')
        .map(|n| n.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The site-packages folders of the first `python3` on the PATH (what `pip install
/// onnxruntime==1.32.0` fills when no environment is in view).
fn python3_site_packages() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import site, sysconfig; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages(), sysconfig.get_paths()['purelib']]))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else { return vec![] };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| PathBuf::from(l.trim()))
        .collect()
}

fn in_wheel(site_packages: &Path) -> PathBuf {
    site_packages.join("onnxruntime").join("capi").join(LIB_NAME)
}

/// The search after `--ort-lib` and `ORT_DYLIB_PATH`, in order: the Python environment the
/// executable is installed in, the project-local install under each root, then `python3`'s
/// site-packages (asked only when the others fail). Returns the first file found, or what was
/// tried.
fn search(
    exe: Option<&Path>,
    roots: &[PathBuf],
    python3: impl FnOnce() -> Vec<PathBuf>,
) -> std::result::Result<PathBuf, Vec<String>> {
    let mut tried: Vec<String> = Vec::new();
    fn first(candidates: Vec<PathBuf>, tried: &mut Vec<String>) -> Option<PathBuf> {
        let found = candidates.iter().find(|c| c.is_file()).cloned();
        for c in candidates {
            let c = c.display().to_string();
            if !tried.contains(&c) {
                tried.push(c);
            }
        }
        found
    }
    if let Some(exe) = exe {
        let env: Vec<PathBuf> = environment_site_packages(exe).iter().map(|d| in_wheel(d)).collect();
        if env.is_empty() {
            // Name the layout looked for, so the message says where a pip install would put it.
            if let Some(prefix) = exe.parent().and_then(Path::parent) {
                let pattern = if cfg!(windows) {
                    prefix.join("Lib").join("site-packages")
                } else {
                    prefix.join("lib").join("python3.*").join("site-packages")
                };
                tried.push(in_wheel(&pattern).display().to_string());
            }
        } else if let Some(found) = first(env, &mut tried) {
            return Ok(found);
        }
    }
    let local = roots.iter().map(|r| r.join(LOCAL_DIR).join(LIB_NAME)).collect();
    if let Some(found) = first(local, &mut tried) {
        return Ok(found);
    }
    let python = python3().iter().map(|d| in_wheel(d)).collect();
    first(python, &mut tried).ok_or(tried)
}

/// Finds the library: `--ort-lib`, then `ORT_DYLIB_PATH`, then the Python environment this
/// executable is installed in (`pip install`: the `onnxruntime` it depends on), then the
/// project-local install (`.ort/lib`), then `python3`'s site-packages. The error lists what was
/// tried and the command that fixes it.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    let (path, _) = find_library_from(explicit)?;
    Ok(path)
}

/// [`find_library`], with what to do where the library found does not load: a path the user
/// chose (`by` the flag or variable) is theirs to change (reinstalling would not help).
fn find_library_from(explicit: Option<&Path>) -> Result<(PathBuf, String)> {
    let chosen = |p: &Path, by: &str, named: &str, fix: &str| -> Result<(PathBuf, String)> {
        let why = match std::fs::metadata(p) {
            Ok(m) if m.is_file() => return Ok((p.to_path_buf(), format!("{by}: {fix}"))),
            Ok(m) if m.is_dir() => "a folder, not the library file",
            Ok(_) => "not a file",
            Err(_) => "no such file",
        };
        bail!("{named}: {why} ({fix})")
    };
    if let Some(p) = explicit {
        let named = format!("--ort-lib {}", p.display());
        return chosen(
            p,
            "--ort-lib",
            &named,
            &format!("point it at ONNX Runtime {ORT_VERSION}'s {LIB_NAME}"),
        );
    }
    // Empty is unset, as for SOURCE_DATE_EPOCH.
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let named = format!("ORT_DYLIB_PATH={}", p.display());
        return chosen(
            &p,
            "ORT_DYLIB_PATH",
            &named,
            &format!("unset it or point it at ONNX Runtime {ORT_VERSION}'s {LIB_NAME}"),
        );
    }
    let exe = std::env::current_exe().ok();
    search(exe.as_deref(), &project_roots(exe.as_deref()), python3_site_packages)
        .map(|p| (p, format!("Reinstall it with: {FIX_COMMAND}")))
        .map_err(|tried| {
            anyhow!(
                "ONNX Runtime {ORT_VERSION} shared library not found (tried --ort-lib, ORT_DYLIB_PATH, {}). Install it with: {FIX_COMMAND}",
                tried.join(", ")
            )
        })
}

/// Why `path` cannot be a shared library, where its first bytes say so (the loader's own reason
/// is not passed on).
fn not_a_library(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let magic: &[u8] = if cfg!(windows) {
        b"MZ"
    } else if cfg!(target_os = "macos") {
        return None;
    } else {
        b"\x7fELF"
    };
    (!head[..n].starts_with(magic)).then_some("the file is not a shared library")
}

/// Why a 64-bit little-endian ELF file at `path` is shorter than its own headers say (an
/// interrupted copy or download): the section header table and every segment must lie within it.
/// None where it is whole, or not such a file (the loader then gives its own reason).
fn cut_short(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut h = [0u8; 64];
    f.read_exact(&mut h).ok()?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, shoff) = (u64_at(&h, 0x20), u64_at(&h, 0x28));
    let (phentsize, phnum) = (u16_at(&h, 0x36), u16_at(&h, 0x38));
    let (shentsize, shnum) = (u16_at(&h, 0x3a), u16_at(&h, 0x3c));
    let mut need = shoff
        .saturating_add(shentsize * shnum)
        .max(phoff.saturating_add(phentsize * phnum));
    if len >= phoff.saturating_add(phentsize * phnum) && phentsize >= 56 {
        let mut table = vec![0u8; (phentsize * phnum) as usize];
        f.seek(SeekFrom::Start(phoff)).ok()?;
        f.read_exact(&mut table).ok()?;
        for entry in table.chunks_exact(phentsize as usize) {
            // p_offset at 8, p_filesz at 32.
            need = need.max(u64_at(entry, 8).saturating_add(u64_at(entry, 32)));
        }
    }
    (len < need).then(|| format!("the file is cut short ({len} bytes; its headers need {need})"))
}

/// Whether ONNX Runtime's u8 × s8 integer kernels can saturate on this CPU: an x86-64 without
/// VNNI (AVX-512 VNNI or AVX-VNNI), where they add pairs of 8-bit products in 16 bits; with VNNI
/// (and off x86) they sum exactly. README, "The CPU matters for INT8 accuracy".
pub fn u8s8_saturates() -> bool {
    #[cfg(target_arch = "x86_64")]
    return !(std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni"));
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

static ENV: OnceLock<std::result::Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// Loads ONNX Runtime once per process; returns the library path in use.
pub fn init(explicit: Option<&Path>) -> Result<PathBuf> {
    let r = ENV.get_or_init(|| {
        let (path, fix) = find_library_from(explicit).map_err(|e| e.to_string())?;
        // The loader maps a cut-short library and dies of SIGBUS on the missing pages: say so first.
        if let Some(why) = cut_short(&path) {
            return Err(format!(
                "cannot load ONNX Runtime from {}: {why}. {fix}",
                path.display()
            ));
        }
        let builder = ort::init_from(&path).map_err(|e| {
            let why = not_a_library(&path).map_or(e.to_string(), |w| format!("{e} ({w})"));
            format!("cannot load ONNX Runtime from {}: {why}. {fix}", path.display())
        })?;
        let env = builder
            .with_name("onnx-compress")
            .build()
            .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
        Ok((env, path))
    });
    match r {
        Ok((_, p)) => Ok(p.clone()),
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn env() -> Result<&'static ort::environment::Environment> {
    match ENV.get() {
        Some(Ok((e, _))) => Ok(e),
        _ => bail!("ONNX Runtime is not initialised (call runtime::init first)"),
    }
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// Intra-op threads; 0 lets ONNX Runtime choose.
    pub threads: usize,
    pub optimization: GraphOptimizationLevel,
    /// Flush denormal floats to zero (FTZ/DAZ) in ONNX Runtime's threads. BERT's attention mask
    /// adds a huge negative number before the softmax, whose `exp` then yields denormals that make
    /// the softmax and the MatMul after it several times slower on x86 CPUs; flushing them changes
    /// no prediction (they are below 1.2e-38). ONNX Runtime applies the first session's setting to
    /// the calling thread for the whole process.
    pub flush_denormals: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: Device::Cpu,
            threads: 0,
            optimization: GraphOptimizationLevel::All,
            flush_denormals: true,
        }
    }
}

/// An open model with the names of the inputs it takes.
pub struct Model {
    pub session: Session,
    pub has_token_type_ids: bool,
    pub has_attention_mask: bool,
    /// The token inputs (input_ids, attention_mask, token_type_ids) the model takes as int32
    /// (tf2onnx's exports, some optimizers'): the batch's int64 arrays are narrowed for them.
    int32: [bool; 3],
    pub output_name: String,
    /// Weights the graph takes as inputs, handed to every run from the model's own memory
    /// ([`open_fed`]); none for a model opened from a file or from bytes.
    weights: Vec<FedWeight>,
}

/// A weight given to each run rather than held by the session: its name, shape, element type and
/// data (the model's own raw bytes where they are aligned for the type, else an aligned copy).
struct FedWeight {
    name: String,
    dims: Vec<i64>,
    ty: Fed,
    raw: bytes::Bytes,
}

/// The element types a weight can be handed over in.
#[derive(Clone, Copy)]
enum Fed {
    Float,
    Float16,
    Int8,
    Uint8,
}

impl Fed {
    fn of(data_type: i32) -> Option<Fed> {
        use crate::onnx::proto::tensor_proto::DataType;
        match DataType::try_from(data_type).ok()? {
            DataType::Float => Some(Fed::Float),
            DataType::Float16 => Some(Fed::Float16),
            DataType::Int8 => Some(Fed::Int8),
            DataType::Uint8 => Some(Fed::Uint8),
            _ => None,
        }
    }

    fn proto(self) -> crate::onnx::proto::tensor_proto::DataType {
        use crate::onnx::proto::tensor_proto::DataType;
        match self {
            Fed::Float => DataType::Float,
            Fed::Float16 => DataType::Float16,
            Fed::Int8 => DataType::Int8,
            Fed::Uint8 => DataType::Uint8,
        }
    }

    fn size(self) -> usize {
        match self {
            Fed::Float => 4,
            Fed::Float16 => 2,
            Fed::Int8 | Fed::Uint8 => 1,
        }
    }
}

impl FedWeight {
    fn value(&self) -> Result<ort::session::SessionInputValue<'_>> {
        let dims = self.dims.clone();
        Ok(match self.ty {
            Fed::Float => TensorRef::from_array_view((dims, view::<f32>(&self.raw)))?.into(),
            Fed::Float16 => TensorRef::from_array_view((dims, view::<half::f16>(&self.raw)))?.into(),
            Fed::Int8 => TensorRef::from_array_view((dims, view::<i8>(&self.raw)))?.into(),
            Fed::Uint8 => TensorRef::from_array_view((dims, &self.raw[..]))?.into(),
        })
    }
}

/// Raw bytes, aligned for `T` (checked when the weight was taken), as a slice of `T`.
fn view<T: Plain>(raw: &[u8]) -> &[T] {
    // SAFETY: `Plain` types are valid for every bit pattern; the prefix and suffix checks make
    // the middle the whole slice, so no byte is dropped.
    let (pre, mid, post) = unsafe { raw.align_to::<T>() };
    assert!(
        pre.is_empty() && post.is_empty(),
        "a fed weight's bytes are aligned for its type"
    );
    mid
}

/// Element types for which every bit pattern is a value.
trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for half::f16 {}
impl Plain for i8 {}

/// `raw` if its address is a multiple of `align`, else a copy in memory aligned for 8 bytes.
fn aligned(raw: bytes::Bytes, align: usize) -> bytes::Bytes {
    if (raw.as_ptr() as usize) % align == 0 {
        return raw;
    }
    struct Words(Vec<u64>, usize);
    impl AsRef<[u8]> for Words {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: the words own at least `self.1` initialized bytes, and u8 has no alignment.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.1) }
        }
    }
    let mut words = vec![0u64; raw.len().div_ceil(8)];
    for (w, c) in words.iter_mut().zip(raw.chunks(8)) {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        *w = u64::from_ne_bytes(b);
    }
    bytes::Bytes::from_owner(Words(words, raw.len()))
}

/// The most intra-op threads per core a session is given: past the cores they only contend.
const MAX_THREADS_PER_CORE: usize = 4;

/// Where more intra-op threads are asked for than this process has CPUs (up to the bound
/// [`builder`] refuses past): a note, as they take turns on the CPUs and a measured speed is
/// usually lower than with one per CPU.
/// `given` names where the number was set (`--threads`, `eval.threads`).
pub fn threads_note(threads: usize, given: &str) -> Option<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (threads > cores && threads <= MAX_THREADS_PER_CORE * cores).then(|| {
        format!(
            "{given} {threads} with {cores} {} available to this process: the threads take turns, which is usually slower than {cores} (0 lets ONNX Runtime choose)",
            if cores == 1 { "CPU" } else { "CPUs" }
        )
    })
}

fn builder(opts: &SessionOptions) -> Result<ort::session::builder::SessionBuilder> {
    let e = |x: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{x}");
    let mut b = Session::builder(env()?).map_err(|x| anyhow!("{x}"))?;
    b = b.with_optimization_level(opts.optimization).map_err(e)?;
    if opts.threads > 0 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if opts.threads > MAX_THREADS_PER_CORE * cores {
            bail!(
                "{} threads asked for (--threads, or eval.threads in a recipe) with {cores} {} available to this process: past {most} they only slow ONNX Runtime down; use 0 (ONNX Runtime's choice) or at most {most}",
                opts.threads,
                if cores == 1 { "CPU" } else { "CPUs" },
                most = MAX_THREADS_PER_CORE * cores,
            );
        }
        b = b.with_intra_threads(opts.threads).map_err(e)?;
    }
    b = b.with_inter_threads(1).map_err(e)?;
    if opts.flush_denormals {
        b = b.with_flush_to_zero().map_err(e)?;
    }
    // ONNX Runtime's own logger would print its errors a second time, in colour, on stderr:
    // errors reach the user through the returned error instead.
    b = b.with_log_level(ort::logging::LogLevel::Fatal).map_err(e)?;
    match opts.device {
        Device::Cpu => {}
        Device::Cuda => {
            #[cfg(feature = "cuda")]
            {
                b = b
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(|x| anyhow!("the CUDA execution provider is not available: {x}"))?;
            }
            #[cfg(not(feature = "cuda"))]
            bail!(
                "CUDA is asked for (--device cuda, or device.cuda: true in a recipe) but this build has no CUDA support: run on the CPU (drop --device cuda; in a recipe, device.cuda: false), or rebuild with `cargo build --release --features cuda` and use the onnxruntime-gpu library"
            );
        }
    }
    Ok(b)
}

/// Whether sessions can be built with `opts` (the device this build supports, its provider):
/// for a command that writes before it opens its first session.
pub fn check_device(opts: &SessionOptions) -> Result<()> {
    builder(opts).map(|_| ())
}

/// ONNX Runtime's message without its `Load model from PATH failed:` (the context names the
/// model) and without the source location and C++ signature its checks put in front
/// of the reason (`/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) Unsupported
/// model IR version: 99, ...` reads `Unsupported model IR version: 99, ...`; also a Windows
/// build's `D:\a\_work\...\x.cc(256): ...` form is left as it is). The location is a path to a
/// C++ source (`.cc`, `.cpp`, `.h`) and `:LINE`, starting the message or after `failed:`; the
/// signature runs to the end of its parameter list (with `::<lambda()>` and ` const` after).
pub fn plain(message: &str) -> String {
    // ONNX Runtime's `Load model from PATH failed:` goes too: the context names the model.
    let message = message
        .strip_prefix("Load model from ")
        .and_then(|m| m.split_once(" failed:"))
        .map_or(message, |(_, reason)| reason.trim_start());
    let source = [".cc:", ".cpp:", ".h:"];
    // The location: the first whitespace-separated word that is `PATH.cc:LINE`.
    let mut at = 0;
    let found = message.split(' ').find_map(|word| {
        let start = at;
        at += word.len() + 1;
        let (head, line) = word.rsplit_once(':')?;
        let path_ok = source.iter().any(|s| head.ends_with(&s[..s.len() - 1]));
        (path_ok && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()))
            .then_some((start, at.min(message.len())))
    });
    let Some((word_start, sig_start)) = found else {
        return message.to_string();
    };
    // Text glued before the path (`failed:/onnxruntime_src/...`) stays.
    let word = &message[word_start..sig_start];
    let keep = word.find('/').unwrap_or(0);
    // The signature: to its parameter list's closing parenthesis, then what follows it without a
    // space (`::<lambda()>`), then ` const`.
    let sig = &message[sig_start..];
    let mut depth = 0usize;
    let mut end = None;
    for (i, c) in sig.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' if depth > 0 => depth -= 1,
            ' ' if depth == 0 && sig[..i].contains(')') => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(mut end) = end else {
        return message.to_string();
    };
    if sig[end..].starts_with(" const") {
        end += " const".len();
    }
    format!("{}{}", &message[..word_start + keep], sig[end..].trim_start())
}

/// An ONNX Runtime error as [`plain`] words it.
fn ort_error(e: ort::Error) -> anyhow::Error {
    anyhow!(plain(&e.to_string()))
}

/// The context of a failed session start: on CUDA the provider, not the model, is the usual cause
/// (no GPU visible, a CUDA library missing from the library path).
fn could_not_load(what: &str, opts: &SessionOptions) -> String {
    match opts.device {
        Device::Cpu => format!("ONNX Runtime could not load {what}"),
        Device::Cuda => format!(
            "ONNX Runtime could not load {what} on CUDA (if ONNX Runtime's message names CUDA: check that `nvidia-smi` sees the GPU and that LD_LIBRARY_PATH holds the CUDA 13 runtime, cuBLAS, cuRAND and cuDNN 9; README, \"On a GPU (CUDA)\")"
        ),
    }
}

/// Why token input `name` of dimensions `dims` (0 or less: dynamic) cannot take the batches a
/// command makes, which vary in size and length; `None` where every dimension is dynamic.
pub fn fixed_shape(name: &str, dims: &[i64]) -> Option<String> {
    dims.iter().any(|&d| d > 0).then(|| {
        let dims: Vec<String> = dims
            .iter()
            .map(|&d| if d > 0 { d.to_string() } else { "?".into() })
            .collect();
        format!(
            "input '{name}' has a fixed shape [{}], and batches vary in size and length: re-export the model with dynamic batch and sequence axes (torch.onnx.export's dynamic_axes / dynamic_shapes; Optimum's export has them)",
            dims.join(", ")
        )
    })
}

/// Why a token input taking `ty` elements cannot be fed.
pub(crate) fn not_integer(name: &str, ty: &str) -> String {
    format!(
        "input '{name}' takes {ty} elements, where token ids, masks and types are integers \
         (int64 or int32): re-export the model with integer token inputs"
    )
}

fn wrap(session: Session, what: &str) -> Result<Model> {
    wrap_fed(session, what, vec![])
}

fn wrap_fed(session: Session, what: &str, weights: Vec<FedWeight>) -> Result<Model> {
    let names: Vec<String> = session
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .filter(|n| !weights.iter().any(|w| &w.name == n))
        .collect();
    for n in &names {
        if !matches!(n.as_str(), "input_ids" | "attention_mask" | "token_type_ids") {
            bail!("{what}: unexpected model input '{n}' (expected input_ids, attention_mask, token_type_ids)");
        }
    }
    if !names.iter().any(|n| n == "input_ids") {
        bail!("{what}: the model has no 'input_ids' input");
    }
    // Batches vary in size and length: a token input of fixed size fails on the first one that
    // differs, in ONNX Runtime's words ("Got invalid dimensions for input"). Token ids are fed
    // as int64, or int32 where the model takes them so.
    let mut int32 = [false; 3];
    for i in session.inputs() {
        if let ort::value::ValueType::Tensor { shape, ty, .. } = i.dtype() {
            if names.iter().any(|n| n == i.name()) {
                if let Some(why) = fixed_shape(i.name(), shape) {
                    bail!("{what}: {why}");
                }
                use ort::value::TensorElementType as T;
                if !matches!(ty, T::Int64 | T::Int32) {
                    bail!("{what}: {}", not_integer(i.name(), &ty.to_string()));
                }
                if let Some(k) = ["input_ids", "attention_mask", "token_type_ids"]
                    .iter()
                    .position(|n| *n == i.name())
                {
                    int32[k] = *ty == T::Int32;
                }
            }
        }
    }
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let output_name = crate::onnx::graph::prediction_output(&outputs)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{what}: the model has no outputs"))?;
    Ok(Model {
        has_token_type_ids: names.iter().any(|n| n == "token_type_ids"),
        has_attention_mask: names.iter().any(|n| n == "attention_mask"),
        int32,
        output_name,
        session,
        weights,
    })
}

/// Opens a model file.
pub fn open(path: &Path, opts: &SessionOptions) -> Result<Model> {
    let session = builder(opts)?
        .commit_from_file(path)
        .map_err(ort_error)
        .with_context(|| could_not_load(&path.display().to_string(), opts))?;
    wrap(session, &path.display().to_string())
}

/// Opens a model held in memory from its serialized bytes (ONNX Runtime parses them and holds its
/// own copy of the weights; the passes' calibration copies are opened with [`open_fed`] instead,
/// which leaves the weights where they are).
pub fn open_bytes(bytes: &[u8], what: &str, opts: &SessionOptions) -> Result<Model> {
    let session = builder(opts)?
        .commit_from_memory(bytes)
        .map_err(ort_error)
        .with_context(|| could_not_load(what, opts))?;
    wrap(session, what)
}

/// Opens a model held in memory with its float weights of 1 KiB and more as graph inputs, handed
/// to every run from the model's own memory: ONNX Runtime gets a graph without them to parse and
/// holds no copy of them (handed over as initializers, external or not, it copies them; parsed
/// from serialized bytes, it holds the bytes, its parse and its tensors while the session opens).
/// For the calibration copies, which a pass opens many times while it holds the model: on a
/// BERT-base file each such session cost about twice the file's size at its peak. ONNX Runtime
/// cannot fold or pre-pack weights it does not see as constants, so these runs are a little
/// slower.
pub fn open_fed(model: &crate::onnx::ModelProto, what: &str, opts: &SessionOptions) -> Result<Model> {
    use prost::Message;
    let (light, weights) = weights_as_inputs(model, Types::Float);
    let session = builder(opts)?
        .commit_from_memory(&light.encode_to_vec())
        .map_err(ort_error)
        .with_context(|| could_not_load(what, opts))?;
    wrap_fed(session, what, weights)
}

/// Which weights [`weights_as_inputs`] takes out of the graph.
#[derive(Clone, Copy, PartialEq)]
enum Types {
    /// Float ones: ONNX Runtime still sees quantized and float16 weights as constants, and fuses
    /// and runs them as it does when it loads the file.
    Float,
    /// Float, float16, int8 and uint8 ones: for a model past 2 GiB even without its float weights.
    All,
}

/// `model` with its weights of 1 KiB and more of the `types` taken out of the graph's
/// initializers and declared as graph inputs instead, and those weights, to be handed to every
/// run (their data is the model's own raw bytes, shared; a weight whose bytes are not aligned for
/// its type is copied once). Weights of other types (int64, ...), small ones and any whose data
/// does not fill its shape stay in the graph, the last for ONNX Runtime to refuse by name.
fn weights_as_inputs(model: &crate::onnx::ModelProto, types: Types) -> (crate::onnx::ModelProto, Vec<FedWeight>) {
    let mut light = model.clone(); // the raw data is shared, not copied
    let mut weights = Vec::new();
    if let Some(g) = light.graph.as_mut() {
        let declared: std::collections::HashSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
        let mut kept = Vec::with_capacity(g.initializer.len());
        for t in std::mem::take(&mut g.initializer) {
            let raw = t.raw_data.clone().unwrap_or_default();
            let fills =
                |ty: Fed| crate::onnx::tensor::numel(&t).is_ok_and(|n| n.checked_mul(ty.size()) == Some(raw.len()));
            let wanted = |ty: Fed| types == Types::All || matches!(ty, Fed::Float);
            let Some(ty) = Fed::of(t.data_type()).filter(|&ty| wanted(ty) && raw.len() >= 1024 && fills(ty)) else {
                kept.push(t);
                continue;
            };
            if !declared.contains(t.name()) {
                let dims: Vec<Result<i64, &str>> = t.dims.iter().map(|&d| Ok(d)).collect();
                g.input
                    .push(crate::onnx::build::value_info(t.name(), ty.proto(), &dims));
            }
            weights.push(FedWeight {
                name: t.name().to_string(),
                dims: t.dims.clone(),
                ty,
                raw: aligned(raw, ty.size()),
            });
        }
        g.initializer = kept;
    }
    (light, weights)
}

/// Token inputs the run check knows how to fill.
const TOKEN_INPUTS: [&str; 4] = ["input_ids", "attention_mask", "token_type_ids", "position_ids"];

/// Loads a model in ONNX Runtime (CPU) and, when its inputs are token inputs ([batch, sequence]
/// integers named `input_ids`, `attention_mask`, `token_type_ids`, `position_ids`), runs it once
/// on a synthetic batch: two rows of eight tokens (or the model's fixed sizes), small token ids,
/// the second row's last three positions masked, token types 0, positions 0, 1, ...; every float
/// output must then be finite. A model with other inputs is only loaded. The error is ONNX
/// Runtime's (which names the node) or the first non-finite value.
///
/// The float weights are handed to the run as inputs from the model's own memory
/// ([`weights_as_inputs`]), as the calibration copies are: ONNX Runtime parses a graph without
/// them and holds no copy (as initializers, external or not, it copies them: a second copy of the
/// written model at the command's peak), and a model past protobuf's 2 GiB limit is checked like
/// any other. Quantized and float16 weights stay in the graph, so that ONNX Runtime fuses and
/// runs them as it will when it loads the file, unless the graph is still past 2 GiB with them
/// (a quantized model of more than 8 GB of float weights): then they are handed over too, and
/// the check runs what the unfused graph computes. Returns whether the model was run (not when,
/// even without those weights, it is past 2 GiB).
pub fn check_runs(model: &crate::onnx::ModelProto) -> Result<bool> {
    check_runs_within(model, crate::onnx::io::PROTOBUF_LIMIT)
}

/// [`check_runs`] with the size past which a graph cannot be handed to ONNX Runtime as `limit`
/// (the tests' way to reach the path of models past 2 GiB).
fn check_runs_within(model: &crate::onnx::ModelProto, limit: usize) -> Result<bool> {
    use ort::value::{Tensor, TensorElementType, ValueType};
    use prost::Message;
    let (mut light, mut weights) = weights_as_inputs(model, Types::Float);
    if light.encoded_len() > limit {
        (light, weights) = weights_as_inputs(model, Types::All);
    }
    if light.encoded_len() > limit {
        // Past 2 GiB even without its weights (int64 and other types stay in the graph): ONNX
        // Runtime cannot be handed it in memory, so it is not run.
        return Ok(false);
    }
    // Without pre-packing: ONNX Runtime would otherwise hold a packed copy of every MatMul weight
    // it sees as a constant, and a check needs no speed.
    let mut session = builder(&SessionOptions::default())?
        .with_prepacking(false)
        .map_err(|e| anyhow!("{e}"))?
        .commit_from_memory(&light.encode_to_vec())
        .map_err(|e| anyhow!("ONNX Runtime cannot load it: {}", plain(&e.to_string())))?;
    let mut inputs: Vec<(String, ort::session::SessionInputValue)> = Vec::new();
    for w in &weights {
        inputs.push((w.name.clone(), w.value()?));
    }
    for i in session.inputs() {
        let name = i.name().to_string();
        if weights.iter().any(|w| w.name == name) {
            continue;
        }
        let ValueType::Tensor { ty, shape, .. } = i.dtype() else {
            return Ok(false);
        };
        let integer = matches!(ty, TensorElementType::Int64 | TensorElementType::Int32);
        if !TOKEN_INPUTS.contains(&name.as_str()) || shape.len() != 2 || !integer {
            return Ok(false);
        }
        let pick = |k: usize, default: usize| usize::try_from(shape[k]).ok().filter(|&d| d > 0).unwrap_or(default);
        let (rows, seq) = (pick(0, 2), pick(1, 8));
        let values = Array2::from_shape_fn((rows, seq), |(r, c)| match name.as_str() {
            "input_ids" => 1 + ((r * 7 + c * 3) % 4) as i64,
            "attention_mask" => i64::from(!(r == 1 && c + 3 >= seq)),
            "position_ids" => c as i64,
            _ => 0,
        });
        let value: ort::session::SessionInputValue = if *ty == TensorElementType::Int64 {
            Tensor::from_array(values)?.into()
        } else {
            Tensor::from_array(values.mapv(|v| v as i32))?.into()
        };
        inputs.push((name, value));
    }
    let outputs = session
        .run(inputs)
        .map_err(|e| anyhow!("ONNX Runtime cannot run it: {}", plain(&e.to_string())))?;
    for (name, value) in outputs.iter() {
        if let Ok((_, data)) = value.try_extract_tensor::<f32>() {
            if let Some(x) = data.iter().find(|x| !x.is_finite()) {
                bail!("its output '{name}' holds {x} on a synthetic batch");
            }
        }
    }
    Ok(true)
}

/// One padded batch: row-major [batch, seq] arrays.
pub struct Batch {
    pub input_ids: Array2<i64>,
    pub attention_mask: Array2<i64>,
    pub token_type_ids: Array2<i64>,
}

impl Batch {
    /// Row-major indexes (batch row × sequence + position) of the real (unmasked) tokens.
    pub fn token_rows(&self) -> Vec<usize> {
        let (b, s) = self.input_ids.dim();
        (0..b * s)
            .filter(|&i| self.attention_mask[[i / s, i % s]] != 0)
            .collect()
    }
}

/// The batch's arrays for the inputs a model declares, by name, and its fed weights (apart from
/// [`Model`] so that its session can be borrowed to run at the same time).
fn inputs<'b>(
    (has_attention_mask, has_token_type_ids, int32): (bool, bool, [bool; 3]),
    weights: &'b [FedWeight],
    batch: &'b Batch,
) -> Result<Vec<(&'b str, ort::session::SessionInputValue<'b>)>> {
    // Viewed where the model takes int64, narrowed to an int32 copy where it takes those.
    let tokens = |a: &'b Array2<i64>, narrow: bool| -> Result<ort::session::SessionInputValue<'b>> {
        Ok(if narrow {
            ort::value::Tensor::from_array(a.mapv(|v| v as i32))?.into()
        } else {
            TensorRef::from_array_view(a)?.into()
        })
    };
    let mut inputs = vec![("input_ids", tokens(&batch.input_ids, int32[0])?)];
    for w in weights {
        inputs.push((w.name.as_str(), w.value()?));
    }
    if has_attention_mask {
        inputs.push(("attention_mask", tokens(&batch.attention_mask, int32[1])?));
    }
    if has_token_type_ids {
        inputs.push(("token_type_ids", tokens(&batch.token_type_ids, int32[2])?));
    }
    Ok(inputs)
}

impl Model {
    /// Runs one batch; returns the logits, row-major [batch, labels], and the label count.
    pub fn run(&mut self, batch: &Batch) -> Result<(Vec<f32>, usize)> {
        let inputs = inputs(
            (self.has_attention_mask, self.has_token_type_ids, self.int32),
            &self.weights,
            batch,
        )?;
        let outputs = self.session.run(inputs).map_err(ort_error)?;
        let (shape, data) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .with_context(|| format!("output '{}' is not a float tensor", self.output_name))?;
        let rows = batch.input_ids.nrows();
        let labels = match shape.len() {
            2 if shape[0] as usize == rows => shape[1] as usize,
            1 if shape[0] as usize == rows => 1,
            _ => bail!(
                "output '{}' has shape {:?}, expected [{rows}, labels]",
                self.output_name,
                &shape[..]
            ),
        };
        Ok((data.to_vec(), labels))
    }
}

/// A session of a copy of a model whose values `names` are its outputs: the model's own outputs
/// are dropped unless named, and the nodes that only fed them with them (a layer-by-layer pass
/// reads one layer at a time).
pub struct Probe {
    model: Model,
    /// The graph outputs holding the named values, in the order of the names.
    outputs: Vec<String>,
}

/// What [`Probe::run_each`] calls per value: its index among the names, its shape and data.
pub type ValueVisit<'a> = dyn FnMut(usize, &[usize], &[f32]) -> Result<()> + 'a;

impl Probe {
    /// Opens the copy; `what` names it in errors. Every value is declared a float tensor: in a
    /// model holding float16 tensors (`quantize --mode fp16`) each is read through a `Cast` to
    /// float, since some stay float16 there (ALBERT's embedding projection) and some float.
    pub fn open(model: &crate::onnx::ModelProto, names: &[String], what: &str, opts: &SessionOptions) -> Result<Probe> {
        use crate::onnx::proto::{tensor_proto::DataType, type_proto, TypeProto, ValueInfoProto};
        let mut m = model.clone();
        let g = m.graph.as_mut().ok_or_else(|| anyhow!("model has no graph"))?;
        // Float16 anywhere: an initializer, a Constant node's value, or a Cast to it.
        let f16 = DataType::Float16 as i32;
        let half = g.initializer.iter().any(|t| t.data_type == Some(f16))
            || g.node.iter().any(|n| {
                n.attribute.iter().any(|a| {
                    (n.op_type() == "Cast" && a.name() == "to" && a.i == Some(f16 as i64))
                        || a.t.as_ref().is_some_and(|t| t.data_type == Some(f16))
                })
            });
        let mut outputs = Vec::with_capacity(names.len());
        for n in names {
            // A value named twice is cast once (two Casts writing one value would not load).
            let out = if half && outputs.contains(&format!("{n}/probe_as_float")) {
                format!("{n}/probe_as_float")
            } else if half {
                let cast = format!("{n}/probe_as_float");
                let node = crate::onnx::build::node("Cast", &cast, &[n], &[&cast]);
                g.node.push(crate::onnx::build::with_attrs(
                    node,
                    vec![crate::onnx::build::attr_int("to", DataType::Float as i64)],
                ));
                cast
            } else {
                n.clone()
            };
            if !g.output.iter().any(|o| o.name() == out) {
                g.output.push(ValueInfoProto {
                    name: Some(out.clone()),
                    r#type: Some(TypeProto {
                        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                            elem_type: Some(DataType::Float as i32),
                            shape: None,
                        })),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            outputs.push(out);
        }
        if !names.is_empty() {
            g.output.retain(|o| outputs.iter().any(|n| n == o.name()));
            crate::onnx::edit::remove_unused(g);
        }
        let model = open_fed(&m, what, opts)?;
        Ok(Probe { model, outputs })
    }

    /// Runs one batch: each named value's shape and data, in the order of the names.
    pub fn run(&mut self, batch: &Batch) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let mut out = Vec::with_capacity(self.outputs.len());
        self.run_each(batch, &mut |_, shape, data| {
            out.push((shape.to_vec(), data.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs one batch and hands `each` every named value (its index among the names, shape and
    /// data) where ONNX Runtime wrote it, without a copy.
    pub fn run_each(&mut self, batch: &Batch, each: &mut ValueVisit) -> Result<()> {
        let m = &mut self.model;
        let inputs = inputs((m.has_attention_mask, m.has_token_type_ids, m.int32), &m.weights, batch)?;
        let outputs = m.session.run(inputs).map_err(ort_error)?;
        for (i, n) in self.outputs.iter().enumerate() {
            let (shape, data) = outputs[n.as_str()].try_extract_tensor::<f32>().with_context(|| {
                let value = n.strip_suffix("/probe_as_float").unwrap_or(n);
                format!("value '{value}' is not a float tensor")
            })?;
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            each(i, &shape, data)?;
        }
        Ok(())
    }
}

/// Runs `model` with `names` exposed as extra graph outputs on each batch and calls `sink` with
/// the number of real tokens and each value's rows for those tokens (`[tokens, width]`).
/// Every requested value must be a float tensor shaped [batch, sequence, width], [batch ·
/// sequence, width] (the tokens flattened, as tf2onnx writes a Dense layer's MatMul), or
/// [batch, width] (one vector per sequence, after a head's first-token pooling: it is given as the
/// row of each of that sequence's tokens).
pub fn capture(
    model: &crate::onnx::ModelProto,
    names: &[String],
    batches: &[Batch],
    opts: &SessionOptions,
    sink: &mut dyn FnMut(&[usize], &crate::passes::Values) -> Result<()>,
) -> Result<()> {
    let mut probe = Probe::open(model, names, "calibration copy of the model", opts)?;
    for (bi, batch) in batches.iter().enumerate() {
        let (b, s) = batch.input_ids.dim();
        let rows = batch.token_rows();
        let mut values = Vec::with_capacity(names.len());
        // Only the real tokens' rows are copied out of ONNX Runtime's outputs.
        probe
            .run_each(batch, &mut |i, shape, data| {
                let n = &names[i];
                let per_sequence = shape.len() == 2 && shape[0] == b;
                let tokens =
                    (shape.len() == 3 && shape[0] == b && shape[1] == s) || (shape.len() == 2 && shape[0] == b * s);
                if !per_sequence && !tokens {
                    bail!(
                        "value '{n}' has shape {shape:?}, expected [{b}, {s}, width], [{}, width] or [{b}, width]",
                        b * s
                    );
                }
                let w = shape[shape.len() - 1];
                let mut v = Vec::with_capacity(rows.len() * w);
                for &r in &rows {
                    let at = if per_sequence { r / s } else { r };
                    v.extend_from_slice(&data[at * w..(at + 1) * w]);
                }
                values.push((v, w));
                Ok(())
            })
            .with_context(|| format!("calibration batch {bi}"))?;
        let positions: Vec<usize> = rows.iter().map(|&r| r % s).collect();
        sink(&positions, &values)?;
    }
    Ok(())
}

/// Calibration through ONNX Runtime: fixed, tokenized batches of a task's training data.
pub struct OrtCalibrator {
    pub batches: Vec<Batch>,
    pub examples: usize,
    pub session: SessionOptions,
    /// Seconds spent running models, for the pass report.
    pub seconds: f64,
}

impl OrtCalibrator {
    /// A calibrator over `batches` (its example count is their rows).
    pub fn new(batches: Vec<Batch>, session: SessionOptions) -> OrtCalibrator {
        OrtCalibrator {
            examples: batches.iter().map(|b| b.input_ids.nrows()).sum(),
            batches,
            session,
            seconds: 0.0,
        }
    }
}

impl crate::passes::Calibrator for OrtCalibrator {
    fn capture(
        &mut self,
        model: &crate::onnx::ModelProto,
        values: &[String],
        sink: &mut crate::passes::Sink,
    ) -> std::result::Result<(), crate::passes::PassError> {
        let t = std::time::Instant::now();
        let mut inner_err = None;
        let r = capture(model, values, &self.batches, &self.session, &mut |n, v| {
            sink(n, v).map_err(|e| {
                let msg = e.to_string();
                inner_err = Some(e);
                anyhow!(msg)
            })
        });
        self.seconds += t.elapsed().as_secs_f64();
        match (r, inner_err) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(crate::passes::PassError::Calibration(format!("{e:#}"))),
        }
    }

    fn batches(&self) -> Option<usize> {
        Some(self.batches.len())
    }

    fn logits(
        &mut self,
        model: &crate::onnx::ModelProto,
    ) -> std::result::Result<(Vec<f32>, usize), crate::passes::PassError> {
        // A headless encoder's output is per token ([batch, sequence, hidden]): its real tokens'
        // rows, each value an output of its own (label count 1), so that what a change does to
        // the model is their mean squared difference, as for a one-output model.
        let per_token = model
            .graph
            .as_ref()
            .and_then(crate::onnx::graph::prediction_value)
            .filter(|o| crate::onnx::graph::declared_rank(o).is_some_and(|r| r == 3))
            .map(|o| o.name().to_string());
        if let Some(name) = per_token {
            let mut all = Vec::new();
            crate::passes::Calibrator::capture(self, model, &[name], &mut |_, v| {
                all.extend_from_slice(&v[0].0);
                Ok(())
            })?;
            return Ok((all, 1));
        }
        let t = std::time::Instant::now();
        let run = || -> Result<(Vec<f32>, usize)> {
            let mut m = open_fed(model, "calibration copy of the model", &self.session)?;
            let mut all = Vec::new();
            let mut labels = 0;
            for b in &self.batches {
                let (l, n) = m.run(b)?;
                labels = n;
                all.extend(l);
            }
            Ok((all, labels))
        };
        let r = run();
        self.seconds += t.elapsed().as_secs_f64();
        r.map_err(|e| crate::passes::PassError::Calibration(format!("{e:#}")))
    }

    fn examples(&self) -> usize {
        self.examples
    }

    fn tokens(&self) -> usize {
        self.batches
            .iter()
            .map(|b| b.attention_mask.iter().filter(|&&m| m != 0).count())
            .sum()
    }

    fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// Opens a model and has ONNX Runtime write the graph it will run (after its optimizations) to
/// `optimized`: to check which fusions fire.
pub fn open_optimized(path: &Path, opts: &SessionOptions, optimized: &Path) -> Result<Model> {
    let session = builder(opts)?
        .with_optimized_model_path(optimized)
        .map_err(|x| anyhow!("{x}"))?
        .commit_from_file(path)
        .map_err(ort_error)
        .with_context(|| could_not_load(&path.display().to_string(), opts))?;
    wrap(session, &path.display().to_string())
}

// The layouts below are the Unix ones (Windows has `Scripts` and `Lib\site-packages`).
#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    #[test]
    fn more_threads_than_cpus_get_a_note_in_the_words_given() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_note(0, "--threads"), None);
        assert_eq!(threads_note(cores, "--threads"), None);
        // Past the bound the session is refused instead (its own error).
        assert_eq!(threads_note(MAX_THREADS_PER_CORE * cores + 1, "--threads"), None);
        let n = threads_note(cores + 1, "eval.threads").unwrap();
        assert!(
            n.starts_with(&format!("eval.threads {} with {cores} CPU", cores + 1)) && n.contains("usually slower"),
            "{n}"
        );
    }

    #[test]
    fn plain_drops_the_source_location_and_signature() {
        let raw = "Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, const std::unordered_map<std::string, int>&, const onnxruntime::logging::Logger&) Unsupported model IR version: 99, max supported IR version: 11";
        assert_eq!(
            plain(raw),
            "Unsupported model IR version: 99, max supported IR version: 11"
        );
        let member = "/onnxruntime_src/a/b.h:46 void onnxruntime::X::f(int) const Opset 29 is under development";
        assert_eq!(plain(member), "Opset 29 is under development");
        let lambda = "/home/me/onnxruntime/core/session/inference_session.cc:1234 onnxruntime::InferenceSession::Initialize()::<lambda()> Exception during initialization: bad";
        assert_eq!(plain(lambda), "Exception during initialization: bad");
        for kept in [
            "Fatal error: com.acme:MyErf(-1) is not a registered function/op",
            "/onnxruntime_src/x.cc: no line",
            "Node (Add) Op (Add) dims 3:4 mismatch at x.cc",
            "Got invalid dimensions for input: input_ids index: 0 Got: 8 Expected: 1",
        ] {
            assert_eq!(plain(kept), kept);
        }
    }

    #[test]
    fn a_failed_cuda_start_says_what_to_check() {
        let cpu = could_not_load("m.onnx", &SessionOptions::default());
        assert_eq!(cpu, "ONNX Runtime could not load m.onnx");
        let cuda = could_not_load(
            "m.onnx",
            &SessionOptions {
                device: Device::Cuda,
                ..Default::default()
            },
        );
        assert!(cuda.starts_with("ONNX Runtime could not load m.onnx on CUDA"), "{cuda}");
        assert!(
            cuda.contains("nvidia-smi") && cuda.contains("LD_LIBRARY_PATH"),
            "{cuda}"
        );
    }

    /// A library path the user chose (--ort-lib) that is a folder or missing is named as such,
    /// with what to point it at; a file that is not a library is said to be one.
    #[test]
    fn a_chosen_library_path_is_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_library(Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("a folder, not the library file (point it at ONNX Runtime"),
            "{e}"
        );
        let e = find_library(Some(&dir.path().join("none.so"))).unwrap_err().to_string();
        assert!(e.contains("no such file (point it at"), "{e}");
        let text = touch(&dir.path().join("model.onnx"));
        assert_eq!(find_library(Some(&text)).unwrap(), text);
        if cfg!(target_os = "linux") {
            assert_eq!(not_a_library(&text), Some("the file is not a shared library"));
            std::fs::write(&text, b"\x7fELF\x02").unwrap();
            assert_eq!(not_a_library(&text), None);
        }
    }

    /// A 64-bit ELF file shorter than its headers say is named as cut short before the loader
    /// maps it (which dies of SIGBUS); a whole one, or another file, is left to the loader.
    #[test]
    fn a_cut_short_library_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // ELF64 LE header: one 56-byte program header at 64 whose segment spans bytes 0..4096,
        // and three 64-byte section headers at 4096.
        let mut h = vec![0u8; 120];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        h[0x28..0x30].copy_from_slice(&4096u64.to_le_bytes());
        h[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        h[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        h[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        h[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        h[64 + 32..64 + 40].copy_from_slice(&4096u64.to_le_bytes());
        let path = dir.path().join("libonnxruntime.so");
        let mut whole = h.clone();
        whole.resize(4096 + 3 * 64, 0);
        std::fs::write(&path, &whole).unwrap();
        assert_eq!(cut_short(&path), None);
        std::fs::write(&path, &whole[..4096 + 64]).unwrap();
        let e = cut_short(&path).unwrap();
        assert!(e.contains("cut short (4160 bytes; its headers need 4288)"), "{e}");
        // The segment alone says so where there are no section headers.
        h[0x28..0x30].copy_from_slice(&0u64.to_le_bytes());
        h[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
        std::fs::write(&path, &h).unwrap();
        assert!(cut_short(&path).unwrap().contains("(120 bytes; its headers need 4096)"));
        std::fs::write(
            &path,
            b"not a library at all, but long enough to hold a header of 64 bytes",
        )
        .unwrap();
        assert_eq!(cut_short(&path), None);
    }

    /// An empty file at `path` (with its folders): the search only checks that files exist.
    fn touch(path: &Path) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
        path.to_path_buf()
    }

    fn no_python3() -> Vec<PathBuf> {
        vec![]
    }

    /// A venv (or `--user`, or system) layout: PREFIX/bin/onnx-compress and the wheel's library
    /// in PREFIX/lib/pythonX.Y/site-packages.
    fn venv(root: &Path, python: &str) -> (PathBuf, PathBuf) {
        let exe = touch(&root.join("venv/bin/onnx-compress"));
        let lib = touch(&in_wheel(&root.join("venv/lib").join(python).join("site-packages")));
        (exe, lib)
    }

    #[test]
    fn an_installed_binary_finds_its_own_environments_library() {
        let dir = tempfile::tempdir().unwrap();
        let (exe, lib) = venv(dir.path(), "python3.11");
        // A project-local install and python3's site-packages come later.
        let project = dir.path().join("project");
        touch(&project.join(LOCAL_DIR).join(LIB_NAME));
        let other = dir.path().join("other-python/site-packages");
        touch(&in_wheel(&other));
        let found = search(Some(&exe), std::slice::from_ref(&project), || vec![other.clone()]);
        assert_eq!(found, Ok(lib));
    }

    #[test]
    fn dist_packages_lib64_and_several_pythons_are_searched() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("usr/local");
        let exe = touch(&prefix.join("bin/onnx-compress"));
        // Debian's system pip writes dist-packages; Fedora's writes platform wheels to lib64.
        let debian = touch(&in_wheel(&prefix.join("lib/python3.9/dist-packages")));
        assert_eq!(search(Some(&exe), &[], no_python3), Ok(debian.clone()));
        let fedora = touch(&in_wheel(&prefix.join("lib64/python3.11/site-packages")));
        assert_eq!(search(Some(&exe), &[], no_python3), Ok(debian.clone()));
        std::fs::remove_file(&debian).unwrap();
        assert_eq!(search(Some(&exe), &[], no_python3), Ok(fedora));
        // The newest Python first where two hold the library.
        let newer = touch(&in_wheel(&prefix.join("lib/python3.12/site-packages")));
        touch(&in_wheel(&prefix.join("lib/python3.10/site-packages")));
        assert_eq!(search(Some(&exe), &[], no_python3), Ok(newer));
    }

    #[test]
    fn without_an_environment_the_project_install_then_python3_are_used() {
        let dir = tempfile::tempdir().unwrap();
        // A build tree: target/release/onnx-compress has no lib/python* beside it.
        let exe = touch(&dir.path().join("project/target/release/onnx-compress"));
        let project = dir.path().join("project");
        let other = dir.path().join("other-python/site-packages");
        let from_python3 = touch(&in_wheel(&other));
        let python3 = || vec![other.clone()];
        assert_eq!(
            search(Some(&exe), std::slice::from_ref(&project), python3),
            Ok(from_python3)
        );
        let local = touch(&project.join(LOCAL_DIR).join(LIB_NAME));
        let asked = std::cell::Cell::new(false);
        let python3 = || {
            asked.set(true);
            vec![other.clone()]
        };
        assert_eq!(search(Some(&exe), std::slice::from_ref(&project), python3), Ok(local));
        assert!(!asked.get(), "python3 is asked only when the project has no library");
    }

    #[test]
    fn an_environment_without_onnxruntime_falls_through() {
        let dir = tempfile::tempdir().unwrap();
        let (exe, lib) = venv(dir.path(), "python3.11");
        std::fs::remove_file(&lib).unwrap();
        let project = dir.path().join("project");
        let local = touch(&project.join(LOCAL_DIR).join(LIB_NAME));
        assert_eq!(
            search(Some(&exe), std::slice::from_ref(&project), no_python3),
            Ok(local)
        );
    }

    #[test]
    fn not_found_lists_every_place_tried_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (exe, lib) = venv(dir.path(), "python3.11");
        std::fs::remove_file(&lib).unwrap();
        let project = dir.path().join("project");
        let other = dir.path().join("other-python/site-packages");
        let tried = search(Some(&exe), &[project.clone(), project.clone()], || vec![other.clone()]).unwrap_err();
        let want = [lib, project.join(LOCAL_DIR).join(LIB_NAME), in_wheel(&other)].map(|p| p.display().to_string());
        assert_eq!(tried, want, "each place once, in search order");
    }

    #[test]
    fn not_found_without_python_folders_names_the_layout_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let exe = touch(&dir.path().join("bin/onnx-compress"));
        let tried = search(Some(&exe), &[], no_python3).unwrap_err();
        let pattern = dir
            .path()
            .join("lib/python3.*/site-packages/onnxruntime/capi")
            .join(LIB_NAME);
        assert_eq!(tried, [pattern.display().to_string()]);
    }

    #[test]
    fn quantized_and_float16_weights_can_reach_onnx_runtime_apart_from_the_graph() {
        use crate::passes::quantize::{quantize, Mode, QuantizeOptions};
        let model = crate::testkit::synth::tiny_bert(&Default::default());
        let ort = crate::testkit::shared::require_ort("the run check of quantized models");
        let modes: &[Mode] = if ort {
            &[Mode::Dynamic, Mode::Static, Mode::Fp16]
        } else {
            &[Mode::Dynamic, Mode::Fp16]
        };
        for &mode in modes {
            let opts = QuantizeOptions {
                mode,
                ..Default::default()
            };
            let batches = crate::testkit::synth::random_batches(2, 3);
            let mut calib = OrtCalibrator::new(batches, SessionOptions::default());
            let calib = (mode == Mode::Static).then_some(&mut calib as &mut dyn crate::passes::Calibrator);
            let Ok((q, _)) = quantize(&model, &opts, calib) else {
                panic!("{mode:?}: the tiny model quantizes");
            };
            let (light, fed) = weights_as_inputs(&q, Types::All);
            let g = light.graph.as_ref().unwrap();
            let left: Vec<&str> = g
                .initializer
                .iter()
                .filter(|t| Fed::of(t.data_type()).is_some() && t.raw_data.as_ref().is_some_and(|r| r.len() >= 1024))
                .map(|t| t.name())
                .collect();
            assert!(left.is_empty(), "{mode:?}: weights left in the graph: {left:?}");
            let want = if mode == Mode::Fp16 { Fed::Float16 } else { Fed::Int8 };
            assert!(
                fed.iter().any(|w| w.ty.proto() == want.proto()),
                "{mode:?}: no {:?} weight handed over apart",
                want.proto()
            );
            if ort {
                use prost::Message;
                assert!(check_runs(&q).unwrap(), "{mode:?}: the check runs the model");
                // A limit the graph is past with its quantized weights but not without them: the
                // check hands them over too and still runs it (as for a quantized model of more
                // than 8 GB of float weights); past the limit even without them, it is not run.
                let floats_only = weights_as_inputs(&q, Types::Float).0.encoded_len();
                let limit = light.encoded_len();
                assert!(limit < floats_only, "{mode:?}: {limit} {floats_only}");
                assert!(
                    check_runs_within(&q, limit).unwrap(),
                    "{mode:?}: run with its weights fed"
                );
                assert!(
                    !check_runs_within(&q, limit - 1).unwrap(),
                    "{mode:?}: past the limit, not run"
                );
            }
        }
    }

    #[test]
    fn weights_not_aligned_for_their_type_are_copied_into_aligned_memory() {
        let raw = bytes::Bytes::from((0u8..=40).collect::<Vec<u8>>());
        for start in 0..4 {
            let part = raw.slice(start..start + 32);
            let fed = aligned(part.clone(), 4);
            assert_eq!(fed, part, "the same bytes");
            assert_eq!(fed.as_ptr() as usize % 4, 0);
            assert_eq!(view::<f32>(&fed).len(), 8);
        }
    }
}
