//! `calbridge emulator microsoft|google --listen ADDR`: runs a provider emulator in the foreground.

use calbridge_emulators::{Emulator, EmulatorConfig, Flavor, SeedSpec};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Provider {
    Microsoft,
    Google,
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Which provider to emulate.
    provider: Provider,
    /// Address to listen on (loopback only is recommended).
    #[arg(long, default_value = "127.0.0.1:8790")]
    listen: String,
    /// Seed the default mailbox with this many events per calendar (0 = empty mailbox).
    #[arg(long, default_value_t = 0)]
    seed_events: usize,
    /// Number of calendars to seed.
    #[arg(long, default_value_t = 1)]
    seed_calendars: usize,
    /// Generator seed (the same seed gives the same mailbox).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A JSON file with an EmulatorConfig (budgets, token lifetime, subscription maximum...).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

pub async fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    let config: EmulatorConfig = match &args.config {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        None => EmulatorConfig::default(),
    };
    let flavor = match args.provider {
        Provider::Microsoft => Flavor::Microsoft,
        Provider::Google => Flavor::Google,
    };
    let emulator = Emulator::start_on(flavor, config, &args.listen).await?;
    if args.seed_events > 0 {
        let spec = SeedSpec {
            calendars: args.seed_calendars,
            events_per_calendar: args.seed_events,
            seed: args.seed,
            ..SeedSpec::default()
        };
        let created = emulator.seed(&spec).await?;
        tracing::info!(created, "seeded the mailbox");
    }
    let token = emulator.token(None)?;
    let api = match flavor {
        Flavor::Microsoft => "/v1.0",
        Flavor::Google => "/calendar/v3",
    };
    eprintln!("{:?} emulator listening on {}", flavor, emulator.base_url());
    eprintln!("  API:     {}{api}", emulator.base_url());
    eprintln!("  control: {}/_control/state", emulator.base_url());
    eprintln!("  token:   {token}");
    tokio::select! {
        _ = emulator.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
