//! The coordinator binary: loads its settings, starts logging, binds, and runs until Ctrl-C
//! or SIGTERM.

use anyhow::Context;
use common::settings::CoordinatorSettings;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let (settings, topology) = CoordinatorSettings::load()?;
    common::logging::init(&format!("{}-coordinator-{}", settings.service, settings.id));
    let addr = settings.listen_addr(&topology);
    let listener = std::net::TcpListener::bind(&addr).with_context(|| format!("binding {addr}"))?;
    coordinator::run(settings, topology, listener, coordinator::shutdown_signal()).await?;
    Ok(())
}
