//! What starting a server of the tests' own takes, whichever server it is.
use std::os::unix::fs::MetadataExt;

/// Whether this process runs as root: PostgreSQL and PgBouncer refuse to, so their binaries are
/// then run as the `postgres` user.
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A port nothing listens on now, for a server that cannot pick one itself (and whose start
/// then fails, naming its log, if another takes the port first).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}
