//! Lossless model I/O. prost keeps every field the schema in `proto/` knows (the complete
//! onnx-ml schema), so decode → encode reproduces the model. External data (tensors in a side
//! file) is read into memory on load and written back out on save when asked or when the model
//! would pass protobuf's 2 GiB limit. Every save is atomic: a temporary file in the output's
//! folder, fsync, rename; a failed save leaves nothing at the output path.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use prost::Message;

use super::proto::{GraphProto, ModelProto, TensorProto};
use super::{tensor, OnnxError};

/// Protobuf cannot serialize a message of 2 GiB or more; stay clear of it.
pub const PROTOBUF_LIMIT: usize = (1 << 31) - (1 << 20);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OnnxError + '_ {
    move |cause| OnnxError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Reads a model and any external data it references (resolved against the model's folder).
pub fn load(path: &Path) -> Result<ModelProto, OnnxError> {
    load_with_sources(path).map(|(m, _)| m)
}

/// Like [`load`], and also returns every file the model was read from (the model file and its
/// external data files): what a pass must never overwrite.
pub fn load_with_sources(path: &Path) -> Result<(ModelProto, Vec<PathBuf>), OnnxError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        return Err(OnnxError::NotOnnx {
            path: path.to_path_buf(),
            reason: "it is a directory; pass the .onnx file inside it".into(),
        });
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    let mut sources = vec![path.to_path_buf()];
    let model = decode(&bytes, path, Some(folder_of(path)), &mut sources)?;
    sources.dedup();
    Ok((model, sources))
}

/// The external data files the model at `path` names (resolved against its folder), read from
/// its graph without loading them; none where it cannot be read (its load says why).
pub fn external_files(path: &Path) -> Vec<PathBuf> {
    let Ok(bytes) = fs::read(path) else { return vec![] };
    // Decoded from shared bytes: the tensors' raw data is not copied.
    let Ok(mut m) = ModelProto::decode(bytes::Bytes::from(bytes)) else {
        return vec![];
    };
    let base = folder_of(path);
    let mut files: Vec<PathBuf> = vec![];
    if let Some(g) = m.graph.as_mut() {
        for_each_tensor_mut(g, &mut |t| {
            for e in &t.external_data {
                let file = base.join(e.value());
                if e.key() == "location" && !files.contains(&file) {
                    files.push(file);
                }
            }
        });
    }
    files
}

/// Bytes on disk of the model at `path`: its file and the external data files it names.
pub fn model_size(path: &Path) -> u64 {
    let mut sources = vec![path.to_path_buf()];
    sources.extend(external_files(path));
    size_on_disk(&sources)
}

/// Decodes a model from bytes. `path` is used in errors; external data is resolved against
/// `base_dir` (refused when `None`).
pub fn load_from_bytes(bytes: &[u8], path: &Path, base_dir: Option<&Path>) -> Result<ModelProto, OnnxError> {
    decode(bytes, path, base_dir, &mut Vec::new())
}

fn decode(
    bytes: &[u8],
    path: &Path,
    base_dir: Option<&Path>,
    sources: &mut Vec<PathBuf>,
) -> Result<ModelProto, OnnxError> {
    let not_onnx = |reason: String| OnnxError::NotOnnx {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty".into()));
    }
    let mut model = ModelProto::decode(bytes).map_err(|e| not_onnx(decode_reason(&e)))?;
    if model.ir_version.unwrap_or(0) <= 0 {
        return Err(not_onnx("no IR version: the file is not an ONNX ModelProto".into()));
    }
    if model.graph.is_none() {
        return Err(not_onnx("the model has no graph".into()));
    }
    if let Some(graph) = model.graph.as_mut() {
        let mut result = Ok(());
        for_each_tensor_mut(graph, &mut |t| {
            if result.is_ok() && tensor::is_external(t) {
                result = inline_external(t, path, base_dir).map(|file| {
                    if !sources.contains(&file) {
                        sources.push(file);
                    }
                });
            }
        });
        result?;
    }
    super::check::check_model(&model, path)?;
    Ok(model)
}

/// Why protobuf decoding failed, in words: ONNX strings must be UTF-8 (prost refuses others),
/// anything else means a truncated or foreign file.
fn decode_reason(e: &prost::DecodeError) -> String {
    let text = e.to_string();
    if text.contains("UTF-8") {
        // prost names the fields innermost first: "NodeProto.name: GraphProto.node: ModelProto.graph: …".
        let mut fields: Vec<&str> = text
            .trim_start_matches("failed to decode Protobuf message: ")
            .split(": ")
            .filter(|p| p.contains('.') && !p.contains(' '))
            .collect();
        fields.reverse();
        let field = if fields.is_empty() {
            "a string field".to_string()
        } else {
            fields.join(" > ")
        };
        return format!("text field {field} is not valid UTF-8 (ONNX strings must be UTF-8)");
    }
    format!("protobuf decode failed: {e}; the file is truncated or not ONNX")
}

/// Calls `f` on every tensor stored in the graph: initializers, Constant values and tensors in
/// subgraphs (If/Loop/Scan bodies).
pub fn for_each_tensor_mut(graph: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
    for t in &mut graph.initializer {
        f(t);
    }
    for st in &mut graph.sparse_initializer {
        if let Some(v) = st.values.as_mut() {
            f(v);
        }
    }
    for node in &mut graph.node {
        for attr in &mut node.attribute {
            if let Some(t) = attr.t.as_mut() {
                f(t);
            }
            for t in &mut attr.tensors {
                f(t);
            }
            if let Some(g) = attr.g.as_mut() {
                for_each_tensor_mut(g, f);
            }
            for g in &mut attr.graphs {
                for_each_tensor_mut(g, f);
            }
        }
    }
}

/// Reads one tensor's external data into `raw_data`; returns the file it came from.
fn inline_external(t: &mut TensorProto, model_path: &Path, base_dir: Option<&Path>) -> Result<PathBuf, OnnxError> {
    let name = t.name().to_string();
    let fail = |reason: String| OnnxError::ExternalData {
        path: model_path.to_path_buf(),
        tensor: name.clone(),
        reason,
    };
    let base = base_dir.ok_or_else(|| fail("external data needs the model's folder".into()))?;
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for e in &t.external_data {
        match e.key() {
            "location" => location = Some(e.value().to_string()),
            "offset" => {
                offset = e
                    .value()
                    .parse()
                    .map_err(|_| fail(format!("bad offset {:?}", e.value())))?
            }
            "length" => {
                length = Some(
                    e.value()
                        .parse()
                        .map_err(|_| fail(format!("bad length {:?}", e.value())))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or_else(|| fail("no 'location' entry".into()))?;
    let rel = Path::new(&location);
    if location.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(fail(format!(
            "location {location:?} must be a relative path inside the model's folder"
        )));
    }
    let file = base.join(rel);
    let base_canon = base.canonicalize().map_err(io_err(base))?;
    let canon = file
        .canonicalize()
        .map_err(|e| fail(format!("cannot open {}: {e}", file.display())))?;
    if !canon.starts_with(&base_canon) {
        return Err(fail(format!("{} resolves outside the model's folder", file.display())));
    }
    let meta = fs::metadata(&canon).map_err(io_err(&canon))?;
    if !meta.is_file() {
        return Err(fail(format!(
            "{} is not a file (a folder?), where the tensor's data should be",
            file.display()
        )));
    }
    let file_len = meta.len();
    let n = tensor::numel(t)? as u64;
    let elem = tensor::element_size(t.data_type()).ok_or_else(|| {
        fail(format!(
            "external data of type {} is not supported",
            tensor::dtype_name(t.data_type())
        ))
    })? as u64;
    let expected = n * elem;
    let length = length.unwrap_or(expected);
    if length != expected {
        return Err(fail(format!(
            "length {length} but shape {:?} needs {expected} bytes",
            t.dims
        )));
    }
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(fail(format!(
            "bytes {offset}..{} lie past the end of {} ({file_len} bytes)",
            offset.saturating_add(length),
            file.display()
        )));
    }
    let mut f = fs::File::open(&canon).map_err(io_err(&canon))?;
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset)).map_err(io_err(&canon))?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf).map_err(io_err(&canon))?;
    t.raw_data = Some(buf.into());
    t.data_location = None;
    t.external_data.clear();
    Ok(canon)
}

/// Whether tensors go to a side file on save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalData {
    /// Only when the model would exceed protobuf's 2 GiB limit.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    pub external_data: ExternalData,
    /// Files the model was read from (see [`load_with_sources`]): never overwritten.
    pub protect: Vec<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SaveSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub data_file: Option<PathBuf>,
    pub data_bytes: u64,
}

/// True when both paths name the same existing file (same device and inode), or the same
/// canonical path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(ca), Ok(cb)) => ca == cb,
        _ => false,
    }
}

/// Errors unless `output` is a different file from `input`.
pub fn ensure_distinct(input: &Path, output: &Path) -> Result<(), OnnxError> {
    if same_file(input, output) || input == output {
        return Err(OnnxError::OutputIsInput {
            path: output.to_path_buf(),
            what: "the input model".into(),
        });
    }
    Ok(())
}

/// Errors when writing `output` (or its `.data` side file) would touch any of `sources`.
pub fn ensure_not_overwriting(sources: &[PathBuf], output: &Path) -> Result<(), OnnxError> {
    let data = data_file_for(output);
    for (i, src) in sources.iter().enumerate() {
        for out in [output, data.as_path()] {
            if same_file(src, out) || src == out {
                return Err(OnnxError::OutputIsInput {
                    path: out.to_path_buf(),
                    what: if i == 0 {
                        "the input model".into()
                    } else {
                        format!("the input's external data ({})", src.display())
                    },
                });
            }
        }
    }
    Ok(())
}

/// Errors when writing `output` (or its `.data` side file) would replace `input`, another file
/// the command reads (`what` names it: "the calibration data").
pub fn ensure_not_read(input: &Path, what: &str, output: &Path) -> Result<(), OnnxError> {
    for out in [output, data_file_for(output).as_path()] {
        if same_file(input, out) || input == out {
            // A file not there yet would be read as `what` once written.
            let what = if input.exists() {
                format!("{what} ({})", input.display())
            } else {
                format!("where {what} is read from ({})", input.display())
            };
            return Err(OnnxError::OutputIsInput {
                path: out.to_path_buf(),
                what,
            });
        }
    }
    Ok(())
}

/// Name of the side file for `path`: `model.onnx` → `model.onnx.data`.
pub fn data_file_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".data");
    path.with_file_name(name)
}

/// Writes the model atomically. Tensors of at least 1 KiB go to `<path>.data` when external
/// data is used; without it, an old `<path>.data` (the replaced model's) is removed.
pub fn save(model: &ModelProto, given: &Path, opts: &SaveOptions) -> Result<SaveSummary, OnnxError> {
    ensure_not_overwriting(&opts.protect, given)?;
    // A symbolic link is written through: the file it names is replaced, the link stays.
    let resolved = written_path(given)?;
    let path = resolved.as_path();
    // (The side file goes beside the file the link names: under that name it must not be an
    // input's either.)
    ensure_not_overwriting(&opts.protect, path)?;
    if path.is_dir() {
        return Err(OnnxError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::other("a folder; name the model file to write in it (model.onnx)"),
        });
    }
    let dir = target_folder(path)?;
    let external = match opts.external_data {
        ExternalData::Always => true,
        ExternalData::Never => false,
        ExternalData::Auto => model.encoded_len() > PROTOBUF_LIMIT,
    };
    if !external {
        ensure_fits_inline(model, path)?;
        let bytes = model.encode_to_vec();
        // A `<path>.data` that the model this one replaces reads its tensors from (this tool's
        // name for a side file; an input's files were refused above) is left without a reader,
        // so it goes; one that model does not name (or with no model there) is not this tool's.
        let tmp = write_temp(path, &dir, &[&bytes], &[path])?;
        // Another writer of this output commits before or after this one, not between.
        let _lock = lock_folder(&dir)?;
        let stale = data_file_for(path);
        let replaced_data = stale.is_file() && reads_data_file(path, &stale);
        persist(tmp, path, &dir)?;
        if replaced_data {
            fs::remove_file(&stale).map_err(io_err(&stale))?;
        }
        return Ok(SaveSummary {
            path: given.to_path_buf(),
            bytes: bytes.len() as u64,
            data_file: None,
            data_bytes: 0,
        });
    }
    let data_path = data_file_for(path);
    let refuse = |at: &Path, why: String| OnnxError::Io {
        path: at.to_path_buf(),
        cause: std::io::Error::other(why),
    };
    if data_path.is_dir() {
        return Err(refuse(
            &data_path,
            "a folder, where the model's external data goes: move it away or name another output".into(),
        ));
    }
    // A model's data file is read from beside the path the model is opened by: through a link to
    // another folder, it would not be found.
    let folder = |p: &Path| folder_of(p).canonicalize().ok();
    if resolved != given && folder(given) != folder(path) {
        return Err(refuse(
            given,
            format!(
                "a symbolic link to {} in another folder: a model with external data is read from beside the path it is opened by; name the file itself",
                path.display()
            ),
        ));
    }
    // Found before the previous model is removed (for the renames).
    if data_path.file_name().is_some_and(|n| n.len() > 255) {
        return Err(refuse(
            given,
            format!(
                "its data file's name ({}.data) would be past 255 bytes: name a shorter output",
                given.file_name().unwrap_or_default().to_string_lossy()
            ),
        ));
    }
    let location = data_path.file_name().unwrap_or_default().to_string_lossy().to_string();
    let mut model = model.clone();
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut offset: u64 = 0;
    if let Some(graph) = model.graph.as_mut() {
        for_each_tensor_mut(graph, &mut |t| {
            let Some(raw) = t.raw_data.as_ref() else { return };
            if raw.len() < 1024 {
                return;
            }
            // Align each tensor to 64 bytes so that readers may map it directly.
            let pad = (64 - offset % 64) % 64;
            if pad > 0 {
                chunks.push(bytes::Bytes::from(vec![0u8; pad as usize]));
                offset += pad;
            }
            let len = raw.len();
            chunks.push(raw.clone());
            tensor::set_external(t, &location, offset, len);
            offset += len as u64;
        });
    }
    // Both files are written in full (and synced) under temporary names before either is
    // renamed into place, so a run killed while writing leaves the previous model and its data
    // file as they were; the two renames then follow each other directly.
    let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_ref()).collect();
    // A new data file is as private as the model it goes with (the one it replaces).
    let data_tmp = write_temp(&data_path, &dir, &refs, &[&data_path, path])?;
    drop(chunks);
    let bytes = model.encode_to_vec();
    let model_tmp = write_temp(path, &dir, &[&bytes], &[path])?;
    // A signal waits for both renames (`crate::interrupt`): a stop between them would leave the
    // previous model beside this one's data. A SIGKILL or a crash cannot be waited for, so the
    // previous model goes first: stopped there, no model is at `path` rather than the previous
    // one reading this one's data (a model that loads and gives other outputs).
    // Another writer of this output (or of its data file) commits before or after this one, not
    // between: interleaved, one's model would read the other's data. (Taken before the signal
    // guard: a stop while waiting for it stops at once.)
    let _lock = lock_folder(&dir)?;
    let _commit = crate::interrupt::commit();
    // Each step is synced before the next, so that none reaches the disk before the one before.
    let replaced = fs::symlink_metadata(path).is_ok();
    if replaced {
        fs::remove_file(path).map_err(write_err(path))?;
        sync_folder(&dir);
    }
    let renamed = rename(data_tmp, &data_path).and_then(|()| {
        sync_folder(&dir);
        rename(model_tmp, path)
    });
    if let Err(e) = renamed {
        let _ = fs::remove_file(&data_path);
        sync_folder(&dir);
        return Err(match (e, replaced) {
            (OnnxError::Io { path, cause }, true) => OnnxError::Io {
                path,
                cause: std::io::Error::new(cause.kind(), format!("{cause} (the model that was there is removed)")),
            },
            (e, _) => e,
        });
    }
    sync_folder(&dir);
    Ok(SaveSummary {
        path: given.to_path_buf(),
        bytes: bytes.len() as u64,
        data_file: Some(data_path),
        data_bytes: offset,
    })
}

/// Errors unless `model` fits in one protobuf message (under 2 GiB): a model past it needs
/// external data. Cheap (no encoding): call it before work whose result is saved inline.
pub fn ensure_fits_inline(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    fits_inline(model.encoded_len(), PROTOBUF_LIMIT, path)
}

/// [`ensure_fits_inline`] for an encoded length and a limit.
fn fits_inline(len: usize, limit: usize, path: &Path) -> Result<(), OnnxError> {
    if len > limit {
        return Err(OnnxError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::other(format!(
                "the model is {:.2} GiB, past protobuf's 2 GiB limit for one file: save it with external data (--external-data auto or always, not never)",
                len as f64 / (1u64 << 30) as f64
            )),
        });
    }
    Ok(())
}

/// Writes a text file (a report, a table) atomically: a temporary file beside it, then a rename,
/// so a reader never sees half of it.
pub fn write_text(path: &Path, text: &str) -> Result<(), OnnxError> {
    write_bytes(path, text.as_bytes())
}

/// [`write_text`] of bytes (an image).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    let dir = target_folder(path)?;
    let path = written_path(path)?;
    let tmp = write_temp(&path, &dir, &[bytes], &[&path])?;
    let _lock = lock_folder(&dir)?;
    persist(tmp, &path, &dir)
}

/// Errors unless files can be written into the folder `dir` (a command's `--out` folder of
/// tables and charts), or, where it is not there yet, into the nearest folder above it that is,
/// where it will be made. Call it before the work whose results go there.
pub fn report_folder(dir: &Path) -> Result<(), OnnxError> {
    let fail = |message: String| OnnxError::Io {
        path: dir.to_path_buf(),
        cause: std::io::Error::other(message),
    };
    let mut above = dir;
    while !above.as_os_str().is_empty() && !above.exists() {
        above = above.parent().unwrap_or(Path::new(""));
    }
    if above.as_os_str().is_empty() {
        above = Path::new(".");
    }
    if !above.is_dir() {
        return Err(fail(format!(
            "{} is a file, not a folder; name a folder for the results",
            above.display()
        )));
    }
    tempfile::Builder::new()
        .prefix(".onnx-compress-probe-")
        .tempfile_in(above)
        .map(|_| ())
        .map_err(|e| {
            fail(format!(
                "cannot create a file in folder {} ({}): write the results where you can create files",
                above.display(),
                std::io::Error::from(e.kind())
            ))
        })
}

/// Where a write to `path` lands: `path`, or where it is a symbolic link, the file the link names
/// (written through, as a shell's `>` writes; the link stays). A link to nothing is refused.
pub fn written_path(path: &Path) -> Result<PathBuf, OnnxError> {
    match fs::symlink_metadata(path) {
        // `/dev/stdout` and kin name a descriptor of this process: its file (a shell's redirect)
        // would be replaced by a new one, and what it held and what is printed after lost.
        Ok(m) if m.file_type().is_symlink()
            && (path.starts_with("/dev/fd")
                || path.starts_with("/proc")
                || fs::read_link(path).is_ok_and(|to| to.starts_with("/proc/self/fd") || to.starts_with("/dev/fd"))) =>
        {
            Err(OnnxError::Io {
                path: path.to_path_buf(),
                cause: std::io::Error::other(
                    "a standard stream or descriptor of this process: the result is written to a new file and renamed into place; name a file",
                ),
            })
        }
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).or_else(|e| {
            // A link to something that is not a file by a path (a pipe: `/dev/stdout | cat`) is
            // left to the checks that name what it is.
            if fs::metadata(path).is_ok() {
                return Ok(path.to_path_buf());
            }
            let to = fs::read_link(path).unwrap_or_default();
            let what = if e.raw_os_error() == Some(libc::ELOOP) {
                format!("a symbolic link to {}, in a loop of links", to.display())
            } else {
                format!("a symbolic link to {}, which is not there", to.display())
            };
            Err(OnnxError::Io {
                path: path.to_path_buf(),
                cause: std::io::Error::other(format!("{what}: name the file to write")),
            })
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// A held [`lock_folder`] lock: its file is removed, then closed (unlocked), when dropped, so that
/// no lock file is left behind.
struct FolderLock {
    _file: fs::File,
    path: PathBuf,
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The lock file of writes into the folder `dir` ([`lock_folder`]): in the system's temporary
/// folder, named by an FNV-1a hash of `dir`'s canonical path (the same in every build).
pub fn lock_file_for(dir: &Path) -> Option<PathBuf> {
    let canon = dir.canonicalize().ok()?;
    let key = canon
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    Some(
        std::env::temp_dir()
            .join("onnx-compress-locks")
            .join(format!("{key:016x}.lock")),
    )
}

/// Holds an exclusive lock for writes into the folder `dir` until dropped, so that two
/// processes of this tool writing the same output there rename their files one after the other.
/// The lock is on a file of the system's temporary folder named after `dir` (the folder itself
/// may be locked by the user's own `flock DIR command`, which runs this tool). Held by another
/// process for more than a second, a line on stderr says what it waits for; for a minute, an
/// error. The file is removed as the lock is let go ([`FolderLock`]). Best effort: where no lock
/// file can be made, the write goes on unlocked.
fn lock_folder(dir: &Path) -> Result<Option<FolderLock>, OnnxError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        use std::os::unix::io::AsRawFd;
        let Some(path) = lock_file_for(dir) else {
            return Ok(None);
        };
        if path.parent().is_none_or(|d| fs::create_dir_all(d).is_err()) {
            return Ok(None);
        }
        let start = std::time::Instant::now();
        let mut said = false;
        loop {
            // (Made by another user, it is opened to read: a lock needs no more.)
            let opened = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o666)
                .open(&path)
                .or_else(|_| fs::File::open(&path));
            let Ok(f) = opened else { return Ok(None) };
            // SAFETY: flock on a descriptor this function owns; released when `f` is closed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                // Each holder removes the file as it lets go: the lock is good only while the
                // path still names the file locked (else open the new one and lock again).
                let same = match (f.metadata(), fs::metadata(&path)) {
                    (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                    _ => false,
                };
                if same {
                    return Ok(Some(FolderLock { _file: f, path }));
                }
                continue;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            let waited = start.elapsed().as_secs_f64();
            if !said && waited > 1.0 {
                eprintln!(
                    "note: waiting for another onnx-compress writing into {} (lock {})",
                    dir.display(),
                    path.display()
                );
                said = true;
            }
            if waited > 60.0 {
                return Err(OnnxError::Io {
                    path: dir.to_path_buf(),
                    cause: std::io::Error::other(format!(
                        "another onnx-compress has been writing into this folder for a minute (stopped? it holds {}): let it finish or end it, then run again; nothing was written",
                        path.display()
                    )),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// The folder a file at `given` is written into (where `given` is a symbolic link, the folder of
/// the file it names: [`written_path`]); an error naming it when it is not there (the error
/// names the folder, not a temporary file in it), when `given` is a folder, and when it is a
/// device, a pipe or a socket (`/dev/null`, `/dev/stdout` on a terminal): a file is written
/// beside it and renamed over it, which would put a plain file in its place. Call it before work
/// whose result goes to `given`.
pub fn target_folder(given: &Path) -> Result<PathBuf, OnnxError> {
    let resolved = written_path(given)?;
    let path = resolved.as_path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fail = |kind, message: String| OnnxError::Io {
        path: given.to_path_buf(),
        cause: std::io::Error::new(kind, message),
    };
    if !dir.is_dir() {
        let message = if dir.exists() {
            format!("{} is not a folder", dir.display())
        } else {
            format!("folder {} does not exist", dir.display())
        };
        return Err(fail(std::io::ErrorKind::NotFound, message));
    }
    if path.is_dir() {
        return Err(fail(
            std::io::ErrorKind::InvalidInput,
            "a folder; name the file to write in it".into(),
        ));
    }
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(fail(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, a pipe or a socket): the result is written to a new file and renamed into place; name a file".into(),
        ));
    }
    // A folder that takes no new file (read-only, /sys, /proc) is found now, not after the work.
    if let Err(e) = tempfile::Builder::new()
        .prefix(".onnx-compress-probe-")
        .tempfile_in(&dir)
    {
        return Err(fail(
            e.kind(),
            // tempfile's message names its file: the kind's alone, as in `write_temp`.
            format!(
                "cannot create a file in folder {} ({}): write the output where you can create files",
                dir.display(),
                std::io::Error::from(e.kind())
            ),
        ));
    }
    Ok(dir)
}

/// A temporary file being written: removed when dropped, and when the process is stopped by a
/// signal ([`crate::interrupt`]), unless [`persist`]ed.
struct Partial {
    file: tempfile::NamedTempFile,
    _registered: crate::interrupt::Temp,
}

/// Writes `parts` to a temporary file in `dir` named after `path` (`.<name>.tmp-XXXXXX.partial`),
/// synced to disk. Dropped without [`persist`], it is removed.
/// The file gets the mode of the first file of `mode_of` there is (the one it replaces), else
/// that of any new file.
fn write_temp(path: &Path, dir: &Path, parts: &[&[u8]], mode_of: &[&Path]) -> Result<Partial, OnnxError> {
    // `.<name>.tmp-XXXXXX.partial`: a file a killed run leaves behind says what it was for. The
    // 20 bytes it adds must fit the 255 of a file name: a longer name is cut for it.
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut cut = name.len().min(255 - 20);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = format!(".{}.tmp-", &name[..cut]);
    let (mut tmp, registered) = crate::interrupt::Temp::create(
        || {
            tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(".partial")
                .tempfile_in(dir)
                .map_err(|cause| OnnxError::Io {
                    path: path.to_path_buf(),
                    // tempfile's message names the temporary file: where the folder refuses new
                    // files, name the folder instead.
                    cause: match cause.kind() {
                        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                            std::io::Error::new(
                                cause.kind(),
                                format!(
                                    "cannot create a file in folder {} ({}): write the output where you can create files",
                                    dir.display(),
                                    std::io::Error::from(cause.kind())
                                ),
                            )
                        }
                        _ => cause,
                    },
                })
        },
        |t| t.path(),
    )?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        for p in parts {
            w.write_all(p).map_err(write_err(path))?;
        }
        w.flush().map_err(write_err(path))?;
    }
    // tempfile creates files 0600: the file gets the mode of the one it replaces, else the
    // ordinary one (0666 less the umask, as any new file).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // (Read, write and execute bits only: no set-id bit is carried to a new file.)
        let mode = mode_of
            .iter()
            .find_map(|p| fs::metadata(p).ok())
            .map_or_else(|| 0o666 & !umask(), |m| m.permissions().mode() & 0o777);
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err(path))?;
    }
    tmp.as_file().sync_all().map_err(write_err(path))?;
    Ok(Partial {
        file: tmp,
        _registered: registered,
    })
}

/// Renames a finished temporary file to `path` (atomic within one folder), then syncs the folder
/// so that the rename itself survives a crash.
fn persist(tmp: Partial, path: &Path, dir: &Path) -> Result<(), OnnxError> {
    rename(tmp, path)?;
    sync_folder(dir);
    Ok(())
}

/// Renames a finished temporary file to `path`, without syncing the folder.
fn rename(tmp: Partial, path: &Path) -> Result<(), OnnxError> {
    tmp.file.persist(path).map(|_| ()).map_err(|e| write_err(path)(e.error))
}

/// An error writing `path`, with what to do where the cause says it (a full disk, a read-only
/// file system, a file that may not be replaced).
fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> OnnxError + '_ {
    move |cause| {
        let todo = match cause.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                "free space there or write the output to another disk"
            }
            std::io::ErrorKind::ReadOnlyFilesystem => "write the output where you can create files",
            std::io::ErrorKind::PermissionDenied => {
                "the file there may not be replaced (permissions, or marked immutable): remove it or name another output"
            }
            _ => return io_err(path)(cause),
        };
        OnnxError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::new(cause.kind(), format!("{cause}: {todo}")),
        }
    }
}

/// The process's file mode creation mask (Linux's `/proc/self/status`; 022 where it cannot be
/// read). Read, not set: setting it to read it would race with other threads creating files.
#[cfg(unix)]
fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Syncs a folder, so that renames and removals in it survive a crash.
fn sync_folder(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Whether the model at `model` (if one is there and decodes) reads tensors from the file `data`.
fn reads_data_file(model: &Path, data: &Path) -> bool {
    external_files(model).iter().any(|f| same_file(f, data))
}

/// The folder a model's external data is resolved against: a bare file name ("model.onnx") has
/// an empty parent, its data lies in the working folder.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Size on disk of a model: the files it was read from ([`load_with_sources`]: the model file
/// and the external data files its tensors name, each counted once).
pub fn size_on_disk(sources: &[PathBuf]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    sources
        .iter()
        .filter(|p| seen.insert(p.as_path()))
        .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_past_two_gib_needs_external_data_and_the_error_names_the_flag() {
        let e = fits_inline(PROTOBUF_LIMIT + 1, PROTOBUF_LIMIT, Path::new("out.onnx"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("out.onnx") && e.contains("2.00 GiB") && e.contains("--external-data auto or always"),
            "{e}"
        );
        assert!(fits_inline(PROTOBUF_LIMIT, PROTOBUF_LIMIT, Path::new("out.onnx")).is_ok());
        assert!(ensure_fits_inline(&ModelProto::default(), Path::new("out.onnx")).is_ok());
    }
}
