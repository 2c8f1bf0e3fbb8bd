//! Integration tests of the isolation backends, with real plugin libraries.

mod smoke {
    use sandbox_isolate::{InProcess, Isolator, LaunchSpec, SwapStep};

    #[test]
    fn smoke() {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/debug/libcounter.so");
        let dir = tempfile::tempdir().unwrap();
        let rt = InProcess::new().launch(&LaunchSpec { sandbox: "s".into(), work_dir: dir.path().join("w") }).unwrap();
        let meta = rt.load(&lib, 1).unwrap();
        println!("{meta:?}");
        rt.swap(&[SwapStep::new("counter", 1)]).unwrap();
        let out = rt.call("counter", br#"{"add":5}"#, None).unwrap();
        println!("{}", String::from_utf8_lossy(&out));
        rt.load(&lib, 2).unwrap();
        let o = rt.swap(&[SwapStep::new("counter", 2)]).unwrap();
        println!("{o:?}");
        let out = rt.call("counter", br#"{"add":1}"#, Some(std::time::Duration::from_secs(1))).unwrap();
        println!("{}", String::from_utf8_lossy(&out));
        println!("{:?}", rt.info());
    }
}
