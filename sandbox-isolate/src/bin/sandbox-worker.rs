//! The sandbox worker process: started by `sandbox_isolate::Process` for
//! each sandbox, never by hand.

fn main() -> std::process::ExitCode {
    sandbox_isolate::worker::worker_main()
}
