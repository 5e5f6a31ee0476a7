//! Memory-mapped files backing `Mapped` fields (`docs/format.md`, "Mapped fields"):
//! a file of a fixed size, mapped shared and writable with memmap2, flushed with msync.
//! No pyo3.

use std::fs::OpenOptions;
use std::path::Path;

use memmap2::MmapMut;

/// Why a mapped file could not be opened.
#[derive(Debug)]
pub enum MapError {
    /// The file exists with another size than the field declares.
    SizeMismatch(String),
    /// Creating, sizing or mapping the file failed.
    Io(String),
}

/// A writable shared mapping of a whole file.
pub struct MappedFile {
    map: MmapMut,
}

impl MappedFile {
    /// Map `path`, creating it (and its directory) with `size` zero bytes when missing.
    pub fn open(path: &Path, size: usize) -> Result<MappedFile, MapError> {
        let io = |what: &str, e: std::io::Error| {
            MapError::Io(format!("{}: {what}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("cannot open", e))?;
        let len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        if len == 0 && size > 0 {
            file.set_len(size as u64)
                .map_err(|e| io("cannot size", e))?;
            file.sync_all().map_err(|e| io("cannot sync", e))?;
        } else if len != size as u64 {
            return Err(MapError::SizeMismatch(format!(
                "{}: the file holds {len} bytes but the field declares {size}",
                path.display()
            )));
        }
        if size == 0 {
            let map = MmapMut::map_anon(0).map_err(|e| io("cannot map", e))?;
            return Ok(MappedFile { map });
        }
        // SAFETY: the mapping is shared with the file; other processes may change the file
        // under it, which only ever changes bytes (never the length: the size is fixed at
        // creation), so reads and writes through it stay in bounds. Concurrent writers to
        // one mapped field are the application's to coordinate, as documented.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| io("cannot map", e))?;
        Ok(MappedFile { map })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Start of the mapping (valid for `len()` bytes while `self` lives).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr().cast_mut()
    }

    /// msync the whole mapping (MS_SYNC): returns once the pages are on disk.
    pub fn flush(&self) -> Result<(), String> {
        self.map.flush().map_err(|e| format!("msync failed: {e}"))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_the_file_and_sizes_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m").join("f.bin");
        {
            let mut m = MappedFile::open(&p, 4096).expect("open");
            m.as_mut_slice()[10] = 42;
            m.flush().expect("flush");
        }
        assert_eq!(std::fs::read(&p).expect("read")[10], 42);
        let again = MappedFile::open(&p, 4096).expect("reopen");
        assert_eq!(again.as_slice()[10], 42);
        assert!(matches!(
            MappedFile::open(&p, 8192),
            Err(MapError::SizeMismatch(_))
        ));
    }
}
