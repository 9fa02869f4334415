//! The content hash of the watched directories: what the target loaded versus what is on
//! disk now.

use std::path::{Path, PathBuf};

use super::ReloadError;

/// The visible regular files of one watched directory: `(file name, bytes)`, sorted by
/// name.
pub type DirFiles = Vec<(String, Vec<u8>)>;

/// Whether a directory entry is one a server reads: kubelet's own entries (`..data`, the
/// timestamped `..2026_12_06_...` directories, `..data_tmp`) start with `..`.
pub fn visible(name: &str) -> bool {
    !name.starts_with("..")
}

/// Lowercase hex sha256 over `dirs`, in the order given: for each directory its path, then
/// for each file its name, its length (8 bytes, big-endian) and its bytes, so that no two
/// different layouts give the same input.
pub fn digest(dirs: &[(PathBuf, DirFiles)]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (dir, files) in dirs {
        ctx.update(dir.as_os_str().as_encoded_bytes());
        ctx.update(&[0]);
        for (name, bytes) in files {
            ctx.update(name.as_bytes());
            ctx.update(&[0]);
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
    }
    hex::encode(ctx.finish().as_ref())
}

/// Reads the visible regular files of `dir` (not recursive), following symlinks
/// (`tls.crt -> ..data/tls.crt`), sorted by name. Entries that are not regular files
/// (directories, dangling links) are left out.
///
/// # Errors
/// [`ReloadError::Read`] when the directory or a listed file cannot be read (a swap in
/// progress can remove a file between the listing and the read: the caller retries).
pub fn read_dir_files(dir: &Path) -> Result<DirFiles, ReloadError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReloadError::Read { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !visible(&name) {
            continue;
        }
        let path = entry.path();
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(read_err(&path))?;
        files.push((name, bytes));
    }
    files.sort();
    Ok(files)
}

/// [`digest`] of [`read_dir_files`] of each of `dirs`.
///
/// # Errors
/// The first [`ReloadError::Read`].
pub fn content_sha256(dirs: &[PathBuf]) -> Result<String, ReloadError> {
    let read = dirs
        .iter()
        .map(|d| Ok((d.clone(), read_dir_files(d)?)))
        .collect::<Result<Vec<_>, ReloadError>>()?;
    Ok(digest(&read))
}
