//! Integration tests of `sandbox-monitor`.

mod limits;
#[cfg(target_os = "linux")]
mod proc;

use std::process::{Child, Command, Stdio};

/// A `cat` child kept alive by its open stdin; killed and reaped on drop.
pub struct Cat(pub Child);

impl Cat {
    /// Starts `cat` reading a pipe that stays open until drop.
    // A plain process for the monitor to watch, as a host's would be.
    #[allow(clippy::disallowed_methods)]
    pub fn spawn() -> Cat {
        let child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("`cat` must be on PATH for these tests");
        Cat(child)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Cat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
