//! The original `master.js`: a master running 3 `hello` workers, on the library API.
//! `cargo build --examples && cargo run --example master`, then open http://127.0.0.1:1337/.
#![deny(warnings)]

use std::time::Duration;

use flora_cluster::Master;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // The hello example is built next to this one.
    let hello = std::env::current_exe()?.with_file_name("hello");
    let master = Master::builder()
        .name("hello")
        .workers(3)
        .program([hello.to_string_lossy().into_owned()])
        .shutdown_timeout(Duration::from_secs(10))
        .build()?;
    // The master spawns workers from this thread: keep it on a current-thread runtime.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(master.run())?;
    Ok(())
}
