//! Lossless model I/O: decode → encode keeps everything, external data round-trips, writes are
//! atomic and never overwrite the input.

use std::path::Path;

use onnx_compress::onnx::io::{data_file_for, ensure_distinct};
use onnx_compress::onnx::proto::StringStringEntryProto;
use onnx_compress::onnx::{self, load_from_bytes, ExternalData, ModelProto, SaveOptions};
use onnx_compress::testkit::shared;
use onnx_compress::testkit::synth::{tiny_bert, SynthOptions};
use prost::Message;

mod common;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn assert_same_model(a: &ModelProto, b: &ModelProto) {
    assert_eq!(a.ir_version, b.ir_version);
    assert_eq!(a.opset_import, b.opset_import);
    assert_eq!(a.metadata_props, b.metadata_props);
    assert_eq!(a.doc_string, b.doc_string);
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    assert_eq!(ga.node, gb.node);
    assert_eq!(ga.input, gb.input);
    assert_eq!(ga.output, gb.output);
    assert_eq!(ga.initializer.len(), gb.initializer.len());
    for (x, y) in ga.initializer.iter().zip(&gb.initializer) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.dims, y.dims);
        // Bit for bit.
        assert_eq!(
            onnx::tensor::to_f32(x)
                .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                .ok(),
            onnx::tensor::to_f32(y)
                .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                .ok()
        );
        assert_eq!(x.raw_data, y.raw_data);
    }
    assert_eq!(a, b);
}

#[test]
fn shared_models_round_trip_byte_for_byte() {
    for name in ["minilm-l6-sst2", "minilm-l6-mrpc"] {
        let Some(path) = shared::require(&format!("models/{name}/model.onnx"), "I/O round trip") else {
            return;
        };
        let bytes = std::fs::read(&path).unwrap();
        let m = onnx::load(&path).unwrap();
        let encoded = m.encode_to_vec();
        // The encoding reproduces the exporter's file exactly, so nothing was dropped.
        assert_eq!(encoded.len(), bytes.len(), "{name}");
        assert!(encoded == bytes, "{name}: re-encoded bytes differ");
        let again = load_from_bytes(&encoded, &path, None).unwrap();
        assert_same_model(&m, &again);

        let dir = tmp();
        let out = dir.path().join("copy.onnx");
        let summary = onnx::save(&m, &out, &SaveOptions::default()).unwrap();
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert_same_model(&m, &onnx::load(&out).unwrap());
    }
}

#[test]
fn unknown_metadata_doc_strings_and_versions_survive() {
    let mut m = tiny_bert(&SynthOptions::default());
    m.ir_version = Some(10);
    m.doc_string = Some("a doc string".into());
    m.domain = Some("test.domain".into());
    m.model_version = Some(7);
    m.metadata_props.push(StringStringEntryProto {
        key: Some("k".into()),
        value: Some("v".into()),
    });
    m.graph.as_mut().unwrap().doc_string = Some("graph doc".into());
    m.graph.as_mut().unwrap().node[0].doc_string = Some("node doc".into());
    let dir = tmp();
    let out = dir.path().join("m.onnx");
    onnx::save(&m, &out, &SaveOptions::default()).unwrap();
    assert_same_model(&m, &onnx::load(&out).unwrap());
}

#[test]
fn external_data_round_trips() {
    let m = tiny_bert(&SynthOptions::default());
    let dir = tmp();
    let out = dir.path().join("ext.onnx");
    let s = onnx::save(
        &m,
        &out,
        &SaveOptions {
            external_data: ExternalData::Always,
            protect: vec![],
        },
    )
    .unwrap();
    let data = data_file_for(&out);
    assert_eq!(s.data_file.as_deref(), Some(data.as_path()));
    assert!(data.is_file());
    // Every tensor of 1 KiB or more moved out: what stays is graph structure and small biases.
    let big: usize = m
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter_map(|t| t.raw_data.as_ref())
        .map(|r| r.len())
        .filter(|&l| l >= 1024)
        .sum();
    assert!(s.data_bytes >= big as u64, "{} < {big}", s.data_bytes);
    // The model part shrinks by the moved bytes, less ~100 bytes of location/offset/length per tensor.
    assert!(
        s.bytes as usize + big <= m.encode_to_vec().len() + 4096,
        "model part {} bytes",
        s.bytes
    );
    // The stored model really points outside…
    let raw = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    assert!(raw
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .any(onnx::tensor::is_external));
    // …and loading brings every tensor back bit for bit.
    assert_same_model(&m, &onnx::load(&out).unwrap());
    // Saved again over it without external data: the old side file goes with the old model.
    let s = onnx::save(&m, &out, &SaveOptions::default()).unwrap();
    assert!(s.data_file.is_none());
    assert!(!data.exists(), "stale {} left beside the new model", data.display());
    let (_, sources) = onnx::load_with_sources(&out).unwrap();
    assert_eq!(onnx::io::size_on_disk(&sources), s.bytes);
    assert_same_model(&m, &onnx::load(&out).unwrap());
    // A `.data` file that no replaced model reads is not this tool's: it stays, with no model at
    // the path before and with one that keeps its tensors inline.
    std::fs::write(&data, "my notes").unwrap();
    onnx::save(&m, &out, &SaveOptions::default()).unwrap();
    let fresh = dir.path().join("fresh.onnx");
    std::fs::write(data_file_for(&fresh), "mine too").unwrap();
    onnx::save(&m, &fresh, &SaveOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "my notes");
    assert_eq!(std::fs::read_to_string(data_file_for(&fresh)).unwrap(), "mine too");
    // A folder where the side file goes is named, and nothing is written.
    let boxed = dir.path().join("boxed.onnx");
    std::fs::create_dir(data_file_for(&boxed)).unwrap();
    let always = SaveOptions {
        external_data: ExternalData::Always,
        protect: vec![],
    };
    let e = onnx::save(&m, &boxed, &always).unwrap_err().to_string();
    assert!(
        e.contains("boxed.onnx.data") && e.contains("a folder, where the model's external data goes"),
        "{e}"
    );
    assert!(!boxed.exists());
    // A folder where a model's data file should be is named as such when the model is read (its
    // size was read as the file's: "past the end").
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(&out, moved.join("m.onnx")).unwrap();
    onnx::save(&m, &moved.join("m.onnx"), &always).unwrap();
    std::fs::remove_file(moved.join("m.onnx.data")).unwrap();
    std::fs::create_dir(moved.join("m.onnx.data")).unwrap();
    let e = onnx::load(&moved.join("m.onnx")).unwrap_err().to_string();
    assert!(e.contains("m.onnx.data is not a file"), "{e}");
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let m = tiny_bert(&SynthOptions::default());
    let dir = tmp();
    let out = dir.path().join("ext.onnx");
    onnx::save(
        &m,
        &out,
        &SaveOptions {
            external_data: ExternalData::Always,
            protect: vec![],
        },
    )
    .unwrap();
    let mut raw = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let loc = |raw: &mut ModelProto, v: &str| {
        for t in &mut raw.graph.as_mut().unwrap().initializer {
            for e in &mut t.external_data {
                if e.key() == "location" {
                    e.value = Some(v.into());
                }
            }
        }
    };
    for bad in ["../../etc/passwd", "/etc/passwd", ""] {
        loc(&mut raw, bad);
        let err = load_from_bytes(&raw.encode_to_vec(), &out, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("external data"), "{bad}: {err}");
    }
    // Past the end of the side file.
    loc(&mut raw, "ext.onnx.data");
    for t in &mut raw.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key() == "offset" {
                e.value = Some("999999999".into());
            }
        }
    }
    let err = load_from_bytes(&raw.encode_to_vec(), &out, Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("past the end"), "{err}");
}

#[test]
fn save_refuses_the_input_and_leaves_nothing_on_failure() {
    let m = tiny_bert(&SynthOptions::default());
    let dir = tmp();
    let input = dir.path().join("in.onnx");
    onnx::save(&m, &input, &SaveOptions::default()).unwrap();
    let before = std::fs::read(&input).unwrap();
    for spelling in [input.clone(), dir.path().join(".").join("in.onnx")] {
        let err = onnx::save(
            &m,
            &spelling,
            &SaveOptions {
                protect: vec![input.clone()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("input model"), "{err}");
        assert!(ensure_distinct(&input, &spelling).is_err());
    }
    assert_eq!(std::fs::read(&input).unwrap(), before);

    // A missing folder: an error and no file, no temporary left behind.
    let missing = dir.path().join("nope").join("out.onnx");
    assert!(onnx::save(&m, &missing, &SaveOptions::default()).is_err());
    assert!(!missing.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn a_device_or_pipe_is_refused_and_a_link_written_through() {
    use onnx_compress::onnx::io::{target_folder, write_text};
    let m = tiny_bert(&SynthOptions::default());
    let dir = tmp();
    // A link is written through, as a shell's `>` writes: the file it names is replaced, the
    // link stays (it was replaced by a plain file: /dev/stdout, for root, went so).
    let named = dir.path().join("named.onnx");
    std::fs::write(&named, "old").unwrap();
    let link = dir.path().join("link.onnx");
    std::os::unix::fs::symlink(&named, &link).unwrap();
    onnx::save(&m, &link, &SaveOptions::default()).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_same_model(&onnx::load(&named).unwrap(), &m);
    write_text(&link, "text").unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&named).unwrap(), "text");
    // A link to nothing is refused, and stays as it was.
    let dangling = dir.path().join("dangling.onnx");
    std::os::unix::fs::symlink(dir.path().join("absent.onnx"), &dangling).unwrap();
    let e = onnx::save(&m, &dangling, &SaveOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("a symbolic link to") && e.contains("not there"), "{e}");
    assert!(target_folder(&dangling).is_err());
    assert!(!dir.path().join("absent.onnx").exists());
    // A loop of links is said to be one.
    let (l1, l2) = (dir.path().join("l1.onnx"), dir.path().join("l2.onnx"));
    std::os::unix::fs::symlink(&l2, &l1).unwrap();
    std::os::unix::fs::symlink(&l1, &l2).unwrap();
    let e = onnx::save(&m, &l1, &SaveOptions::default()).unwrap_err().to_string();
    assert!(e.contains("in a loop of links"), "{e}");
    // With external data through a link to another folder: refused (the data file would be
    // beside the target, and the model read through the link looks for it beside the link).
    let other = tmp();
    let far = other.path().join("far.onnx");
    std::fs::write(&far, "old").unwrap();
    let to_far = dir.path().join("to_far.onnx");
    std::os::unix::fs::symlink(&far, &to_far).unwrap();
    let always = SaveOptions {
        external_data: ExternalData::Always,
        protect: vec![],
    };
    let e = onnx::save(&m, &to_far, &always).unwrap_err().to_string();
    assert!(
        e.contains("in another folder") && e.contains("name the file itself"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&far).unwrap(), "old");
    // In the same folder it is written through, and loads through the link.
    onnx::save(&m, &link, &always).unwrap();
    assert_same_model(&onnx::load(&link).unwrap(), &m);
    // A pipe (and /dev/null, a device) would be replaced by a plain file: refused, untouched.
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for target in [fifo.as_path(), Path::new("/dev/null")] {
        let e = onnx::save(&m, target, &SaveOptions::default()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(write_text(target, "x").is_err());
        assert!(target_folder(target).is_err());
        assert!(!std::fs::metadata(target).unwrap().is_file());
    }
    // A file where the folder should be.
    let e = target_folder(&dir.path().join("link.onnx/x.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a folder"), "{e}");
    // A folder that takes no file (/proc, even for root) is named before any work; a writable one
    // is left as it was.
    if cfg!(target_os = "linux") {
        let e = target_folder(Path::new("/proc/x.onnx")).unwrap_err().to_string();
        assert!(
            e.contains("cannot create a file in folder /proc") && !e.contains("probe"),
            "{e}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(target_folder(&empty.path().join("x.onnx")).unwrap(), empty.path());
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// A file written gets the mode of the one it replaces, else the ordinary one under the umask
/// (every file was 0644, also under `umask 077`, and an overwritten 0640 file widened to 0644);
/// a name of up to 255 bytes is written (the temporary file's 20 more bytes were refused).
#[cfg(unix)]
#[test]
fn permissions_follow_the_replaced_file_and_long_names_are_written() {
    use std::os::unix::fs::PermissionsExt;
    let m = tiny_bert(&SynthOptions::default());
    let dir = tmp();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let kept = dir.path().join("kept.onnx");
    std::fs::write(&kept, "old").unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
    onnx::save(&m, &kept, &SaveOptions::default()).unwrap();
    assert_eq!(mode(&kept), 0o640);
    // Its new data file is as private as the model; no set-id bit is carried.
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o600)).unwrap();
    let always = SaveOptions {
        external_data: ExternalData::Always,
        protect: vec![],
    };
    onnx::save(&m, &kept, &always).unwrap();
    assert_eq!((mode(&kept), mode(&data_file_for(&kept))), (0o600, 0o600));
    let setuid = dir.path().join("setuid.onnx");
    std::fs::write(&setuid, "old").unwrap();
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    onnx::save(&m, &setuid, &SaveOptions::default()).unwrap();
    let full = std::fs::metadata(&setuid).unwrap().permissions().mode() & 0o7777;
    assert_eq!(full, 0o755);
    // A new file: 0666 less the umask: 0600 under `umask 077` (it was 0644 whatever the umask).
    if shared::require_ort("convert under umask 077") {
        let private = dir.path().join("private.onnx");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 077 && exec \"$0\" convert \"$1\" \"$2\"")
            .arg(assert_cmd::cargo::cargo_bin("onnx-compress"))
            .arg(&kept)
            .arg(&private)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(&private), 0o600);
    }
    // This process's umask (read from /proc, as the tool reads it).
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        })
        .unwrap_or(0o022);
    let new = dir.path().join("new.onnx");
    onnx::save(&m, &new, &SaveOptions::default()).unwrap();
    assert_eq!(mode(&new), 0o666 & !umask);
    let long = dir.path().join(format!("{}.onnx", "x".repeat(250)));
    onnx::save(&m, &long, &SaveOptions::default()).unwrap();
    assert_same_model(&onnx::load(&long).unwrap(), &m);
    // Its data file's name would be past 255 bytes: refused before the model there is removed.
    let before = std::fs::read(&long).unwrap();
    let e = onnx::save(&m, &long, &always).unwrap_err().to_string();
    assert!(e.contains("past 255 bytes"), "{e}");
    assert_eq!(std::fs::read(&long).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A results folder (`bench --out`, `sensitivity --out`) is checked before the work: under a
/// file, or where no file can be created, refused; a folder not made yet is fine.
#[test]
fn a_results_folder_is_checked_before_the_work() {
    use onnx_compress::onnx::io::report_folder;
    let dir = tmp();
    report_folder(&dir.path().join("new").join("deeper")).unwrap();
    assert!(!dir.path().join("new").exists(), "the check made a folder");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = report_folder(&file.join("sub")).unwrap_err().to_string();
    assert!(e.contains("is a file, not a folder"), "{e}");
    if cfg!(target_os = "linux") {
        let e = report_folder(Path::new("/proc/results")).unwrap_err().to_string();
        assert!(e.contains("cannot create a file in folder /proc"), "{e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn truncated_and_foreign_bytes_are_clear_errors() {
    let m = tiny_bert(&SynthOptions::default()).encode_to_vec();
    let p = Path::new("model.onnx");
    for cut in [1, 10, m.len() / 2, m.len() - 1] {
        let e = load_from_bytes(&m[..cut], p, None).unwrap_err().to_string();
        assert!(
            e.contains("model.onnx") && e.contains("not a valid ONNX model"),
            "{cut}: {e}"
        );
    }
    for junk in [&b""[..], b"hello, this is text\n", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"] {
        let e = load_from_bytes(junk, p, None).unwrap_err().to_string();
        assert!(e.contains("not a valid ONNX model"), "{e}");
    }
}

/// Two writers of one output take turns at the renames (a lock file for the folder): a write
/// whose lock another process holds waits for it, says so on stderr after a second, then writes;
/// a lock the user holds on the folder itself (`flock DIR onnx-compress ...`) does not stop it
/// (it waited forever).
/// Takes the tool's write lock on the folder `dir` (as another onnx-compress writing there holds
/// it): the lock file's path and the open file that holds the lock until dropped.
#[cfg(unix)]
fn hold_write_lock(dir: &Path) -> (std::path::PathBuf, std::fs::File) {
    use std::os::unix::io::AsRawFd;
    let lock = onnx::io::lock_file_for(dir).unwrap();
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .unwrap();
    // SAFETY: flock on a descriptor this function owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    (lock, held)
}

/// A temporary folder holding a tiny model `in.onnx` and an empty output folder `out`; `None`
/// (said) without ONNX Runtime, which checks what convert writes.
fn lock_test_folder() -> Option<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> {
    if !shared::require_ort("convert's check of the written model") {
        return None;
    }
    let dir = tmp();
    let input = dir.path().join("in.onnx");
    onnx::save(&tiny_bert(&SynthOptions::default()), &input, &SaveOptions::default()).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    Some((dir, input, out_dir))
}

/// Reads `child`'s stderr until it says it waits for the write lock (killed after a minute if it
/// never does: the test fails, not hangs); the watchdog's flag (set it once the child is done)
/// and the lines after.
#[cfg(unix)]
fn await_lock_note(
    child: &mut std::process::Child,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead;
    let done = common::watchdog(child.id(), 60);
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let said = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("waiting for another onnx-compress writing into"));
    assert!(said.is_some(), "no note while waiting");
    (done, lines)
}

/// `convert FLAGS INPUT OUT` started, its stderr read by the test.
#[cfg(unix)]
fn spawn_convert(flags: &[&str], input: &Path, out: &Path) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-compress"))
        .arg("convert")
        .args(flags)
        .arg(input)
        .arg(out)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The names in folder `dir`.
#[cfg(unix)]
fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

#[cfg(unix)]
#[test]
fn a_write_waits_for_the_folder_lock_and_says_so() {
    use std::os::unix::io::AsRawFd;
    let Some((_dir, input, out_dir)) = lock_test_folder() else {
        return;
    };
    let convert = |name: &str| spawn_convert(&["--external-data", "always"], &input, &out_dir.join(name));
    // SAFETY (both): flock on descriptors this test owns.
    let flock = |f: &std::fs::File| assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    // The folder itself locked: written at once.
    let folder = std::fs::File::open(&out_dir).unwrap();
    flock(&folder);
    let o = convert("a.onnx").wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("waiting"));
    drop(folder);
    // The tool's lock held: it waits, and says so.
    let (lock, held) = hold_write_lock(&out_dir);
    let mut child = convert("b.onnx");
    let (done, lines) = await_lock_note(&mut child);
    assert!(!out_dir.join("b.onnx").exists(), "written while the lock was held");
    drop(held);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    // (convert adds its history entry: the graphs are compared.)
    assert_eq!(
        onnx::load(&out_dir.join("b.onnx")).unwrap().graph,
        onnx::load(&input).unwrap().graph
    );
    // The lock file goes with the lock (one was left per folder ever written).
    assert!(!lock.exists(), "{} left behind", lock.display());
}

/// Ctrl-C while a write waits for the folder's lock: the process ends as SIGINT would, and the
/// model it had written to a temporary file beside the output is gone (nothing else is left in
/// the folder).
#[cfg(unix)]
#[test]
fn a_stop_while_waiting_for_the_lock_leaves_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let Some((_dir, input, out_dir)) = lock_test_folder() else {
        return;
    };
    let (_, held) = hold_write_lock(&out_dir);
    let mut child = spawn_convert(&[], &input, &out_dir.join("b.onnx"));
    let (done, _lines) = await_lock_note(&mut child);
    // The model is written (to its temporary file) before the lock is asked for.
    let before = names_in(&out_dir);
    assert_eq!(before.len(), 1, "{before:?}");
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(130),
        "{status:?}"
    );
    let left = names_in(&out_dir);
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(held);
}
