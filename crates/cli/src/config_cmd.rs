//! `calbridge config …`.

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example configuration (the defaults), ready to edit.
    Example,
}

#[allow(clippy::print_stdout)]
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Example => print!("{}", calbridge_server::config::EXAMPLE),
    }
    Ok(())
}
