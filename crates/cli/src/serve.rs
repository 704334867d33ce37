//! `strata disk serve` (hidden): the background server of one plugged disk, started by `plug`.
//! The body is `strata_plug::serve`.

use std::path::Path;

use anyhow::Result;

/// Serves until SIGTERM or SIGINT, then flushes and returns.
pub fn serve(
    path: &Path,
    socket: &Path,
    read_only: bool,
    tcp: Option<&str>,
    fuse: Option<&Path>,
) -> Result<()> {
    strata_plug::serve(&strata_plug::ServerArgs {
        path: path.to_path_buf(),
        socket: socket.to_path_buf(),
        read_only,
        tcp: tcp.map(str::to_string),
        fuse: fuse.map(Path::to_path_buf),
    })?;
    Ok(())
}
