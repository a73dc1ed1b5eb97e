//! `calbridge keys …`: API keys and the master key, run on the server's machine against its database.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use calbridge_server::bootstrap::{self, MasterKeySource};
use calbridge_server::keys::{Scope, parse_scopes};
use calbridge_store::ApiKeyId;
use calbridge_store::crypto::MasterKey;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make an API key; the token is printed once.
    Create {
        /// Tenant name or id; created when no tenant has that name.
        #[arg(long)]
        tenant: String,
        /// Comma-separated: events:read, events:write, connections:manage, conflicts:resolve, admin.
        #[arg(long)]
        scopes: String,
        /// A label for listings.
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// List the keys of a tenant (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Revoke a key by id or prefix.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The key's id (uuid) or its prefix (the 16 hex digits after `cbk_`).
        key: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Re-encrypt every secret at rest under a new master key.
    RotateMaster {
        /// The new key (64 hex digits or base64 of 32 bytes); generated when absent.
        #[arg(long)]
        new_key: Option<String>,
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[allow(clippy::print_stdout)]
pub fn run(config_file: Option<&PathBuf>, command: KeysCommand) -> anyhow::Result<()> {
    let database_url = match &command {
        KeysCommand::Create { database_url, .. }
        | KeysCommand::List { database_url, .. }
        | KeysCommand::Revoke { database_url, .. }
        | KeysCommand::RotateMaster { database_url, .. } => database_url.clone(),
    };
    let config = crate::serve::load_config(config_file, None, database_url.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let store = bootstrap::open_store(&config).await?;
        match command {
            KeysCommand::Create {
                tenant,
                scopes,
                name,
                ..
            } => {
                let scopes: Vec<Scope> = parse_scopes(&scopes)?.into_iter().collect();
                if scopes.is_empty() {
                    bail!("give at least one scope with --scopes");
                }
                let tenant = bootstrap::tenant_by_name_or_id(store.as_ref(), &tenant).await?;
                let (key, token) =
                    calbridge_server::api::keys::make_key(store.as_ref(), tenant.id, &name, &scopes)
                        .await?;
                store
                    .append_audit(
                        tenant.id,
                        calbridge_store::NewAuditEntry {
                            actor: "cli".into(),
                            action: "key.created".into(),
                            subject: key.id.to_string(),
                            details_json: serde_json::json!({"prefix": key.prefix, "name": key.name, "scopes": key.scopes}).to_string(),
                        },
                    )
                    .await?;
                println!("tenant  {} ({})", tenant.name, tenant.id);
                println!("key id  {}", key.id);
                println!("scopes  {}", key.scopes.join(","));
                println!("token   {token}");
                println!("(the token is shown this once)");
            }
            KeysCommand::List { tenant, .. } => {
                let tenant = find_tenant(store.as_ref(), &tenant).await?;
                for key in store.list_api_keys(tenant.id).await? {
                    println!(
                        "{}\tcbk_{}_…\t{}\t{}\t{}",
                        key.id,
                        key.prefix,
                        key.name,
                        key.scopes.join(","),
                        key.revoked_at.map_or_else(|| "active".to_owned(), |t| format!("revoked {t}"))
                    );
                }
            }
            KeysCommand::Revoke { tenant, key, .. } => {
                let tenant = find_tenant(store.as_ref(), &tenant).await?;
                let keys = store.list_api_keys(tenant.id).await?;
                let id = match ApiKeyId::parse(&key) {
                    Ok(id) => id,
                    Err(_) => keys
                        .iter()
                        .find(|k| k.prefix == key)
                        .map(|k| k.id)
                        .with_context(|| format!("no key `{key}` in tenant {}", tenant.name))?,
                };
                let revoked = store.revoke_api_key(tenant.id, id).await?;
                store
                    .append_audit(
                        tenant.id,
                        calbridge_store::NewAuditEntry {
                            actor: "cli".into(),
                            action: "key.revoked".into(),
                            subject: revoked.id.to_string(),
                            details_json: serde_json::json!({"prefix": revoked.prefix}).to_string(),
                        },
                    )
                    .await?;
                println!("revoked {} (cbk_{}_…)", revoked.id, revoked.prefix);
            }
            KeysCommand::RotateMaster { new_key, .. } => {
                let old = bootstrap::master_key(&config)?;
                let new_text = match new_key {
                    Some(text) => text.trim().to_owned(),
                    None => {
                        let mut bytes = [0u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
                        hex::encode(bytes)
                    }
                };
                let new = MasterKey::parse(&new_text)?;
                match &old.source {
                    MasterKeySource::File(path) => {
                        // Write the new key before re-sealing, so a crash never leaves sealed data whose
                        // key exists nowhere: `<file>.new` holds it until it replaces the old file.
                        let staged = path.with_extension("key.new");
                        write_key_file(&staged, &new_text)?;
                        let count = store.rotate_master(&old.key, &new).await?;
                        std::fs::rename(&staged, path).with_context(|| {
                            format!("re-sealed under the new key, but could not move {} over {}; do it by hand", staged.display(), path.display())
                        })?;
                        println!("re-sealed {count} secrets; {} now holds the new key (id {})", path.display(), new.key_id());
                    }
                    MasterKeySource::Inline => {
                        let count = store.rotate_master(&old.key, &new).await?;
                        println!("re-sealed {count} secrets under the new master key (id {}).", new.key_id());
                        println!("Replace secrets.master_key / CALBRIDGE_SECRETS__MASTER_KEY with:");
                        println!("{new_text}");
                    }
                }
            }
        }
        anyhow::Ok(())
    })
}

async fn find_tenant(
    store: &dyn calbridge_store::Store,
    name_or_id: &str,
) -> anyhow::Result<calbridge_store::Tenant> {
    store
        .list_tenants()
        .await?
        .into_iter()
        .find(|t| t.id.to_string() == name_or_id || t.name == name_or_id)
        .with_context(|| format!("no tenant named `{name_or_id}`"))
}

fn write_key_file(path: &std::path::Path, key_text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(format!("{key_text}\n").as_bytes())?;
    file.sync_all()?;
    Ok(())
}
