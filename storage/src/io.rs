//! The file operations the log writer needs, behind a small trait, so that tests can swap in
//! a fault-injecting file (see [`crate::testing`]). Two real backends live here:
//! [`DmaFs`] (glommio `DmaFile`: O_DIRECT, io_uring, owned DMA buffers; for use inside a
//! glommio executor) and [`StdFs`] (blocking `pwrite`/`fdatasync`; for tools and tests that
//! do not run an executor). A third, [`crate::uring::UringFs`], drives a core's own io_uring
//! by polling. This module does no framing and keeps no log state.

use std::io;
use std::path::Path;

/// Creates segment files. Implementations are `!Send` by design: a writer and its files live
/// on one core. (`async fn` in a public trait is fine here for the same reason.)
#[allow(async_fn_in_trait)]
pub trait LogFs {
    /// The file type this backend produces.
    type File: LogFile;

    /// Creates a new, empty segment file at `path` (an existing file is an error),
    /// preallocates `capacity` bytes and makes the file and its directory entry durable.
    async fn create_segment(&self, path: &Path, capacity: u64) -> io::Result<Self::File>;
}

/// An open segment file. Offsets and lengths handed in are multiples of 4096.
#[allow(async_fn_in_trait)]
pub trait LogFile {
    /// Writes `data` at `pos`; returns how many bytes were written. The implementation copies
    /// `data` into a buffer it owns for the whole operation (kernel IO never borrows
    /// `data` past the first await).
    async fn write_at(&self, data: &[u8], pos: u64) -> io::Result<usize>;
    /// fdatasync: on success every byte written before the call is durable.
    async fn sync_data(&self) -> io::Result<()>;
    /// Closes the file.
    async fn close(self) -> io::Result<()>;
}

fn glommio_err(e: glommio::GlommioError<()>) -> io::Error {
    e.into()
}

/// glommio DMA files: O_DIRECT writes submitted through the core's io_uring, from a
/// `DmaBuffer` owned by the operation until it completes. Must be used inside a glommio
/// executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaFs;

/// A segment file opened by [`DmaFs`].
#[derive(Debug)]
pub struct DmaSegment {
    file: glommio::io::DmaFile,
}

impl LogFs for DmaFs {
    type File = DmaSegment;

    async fn create_segment(&self, path: &Path, capacity: u64) -> io::Result<DmaSegment> {
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "segment file already exists",
            ));
        }
        let file = glommio::io::DmaFile::create(path)
            .await
            .map_err(glommio_err)?;
        file.pre_allocate(capacity, false)
            .await
            .map_err(glommio_err)?;
        // Makes the preallocated size durable so later fdatasyncs carry data only.
        file.fdatasync().await.map_err(glommio_err)?;
        if let Some(parent) = path.parent() {
            let dir = glommio::io::Directory::open(parent)
                .await
                .map_err(glommio_err)?;
            dir.sync().await.map_err(glommio_err)?;
            dir.close().await.map_err(glommio_err)?;
        }
        Ok(DmaSegment { file })
    }
}

impl LogFile for DmaSegment {
    async fn write_at(&self, data: &[u8], pos: u64) -> io::Result<usize> {
        let mut buf = self.file.alloc_dma_buffer(data.len());
        buf.as_bytes_mut().copy_from_slice(data);
        // `buf` moves into the operation and is freed only once the kernel completed it.
        self.file.write_at(buf, pos).await.map_err(glommio_err)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(glommio_err)
    }

    async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(glommio_err)
    }
}

/// Blocking std files (`pwrite` + `fdatasync`). For tools, tests and code outside a glommio
/// executor; not for a core's data path (it blocks the executor).
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// A segment file opened by [`StdFs`].
#[derive(Debug)]
pub struct StdSegment {
    file: std::fs::File,
}

impl LogFs for StdFs {
    type File = StdSegment;

    async fn create_segment(&self, path: &Path, capacity: u64) -> io::Result<StdSegment> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(capacity)?;
        file.sync_all()?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(StdSegment { file })
    }
}

impl LogFile for StdSegment {
    async fn write_at(&self, data: &[u8], pos: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, pos)?;
        Ok(data.len())
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}
