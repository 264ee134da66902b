//! The command line: `serve` (the default) and the chores an operator needs without SQL.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Parser, Subcommand};

use crate::auth::Passwords;
use crate::config::Config;
use crate::domain::{NewPassword, NewUser, Role, UserChange, Username};
use crate::error::{Error, Result};
use crate::store::{self, Store, UserFilter};

/// Named in `serve --help`; a test in `config` checks it lists every setting.
pub(crate) const SERVE_SETTINGS: &str = "\
Settings (environment or .env; see .env.example): BIND_ADDR, DATABASE_URL,
DATABASE_MAX_CONNECTIONS, DATABASE_ACQUIRE_TIMEOUT_SECS, JWT_SECRET,
ACCESS_TOKEN_TTL_SECS, REFRESH_TOKEN_TTL_SECS, PUBLIC_BASE_URL, REQUEST_TIMEOUT_SECS,
SEND_TIMEOUT_SECS, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT, SHUTDOWN_TIMEOUT_SECS,
PASSWORD_HASH_QUEUE, METRICS_ADDR, SELF_REGISTRATION, TRUSTED_PROXIES, CORS_ALLOWED_ORIGINS,
WEBHOOK_RETRY_SECS, WEBHOOK_ALLOW_PRIVATE_NETWORKS, WEBHOOK_TIMEOUT_SECS, WEBHOOK_MAX_CONCURRENT,
WEBHOOK_MAX_CONCURRENT_PER_WEBHOOK, EMBED_STREAMS_MAX, EMBED_STREAMS_PER_CLIENT, EMBED_STREAM_MAX_SECS,
ATTACHMENT_STORAGE, S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_PRESIGNED_URL_SECS,
ATTACHMENT_MAX_BYTES,
UPLOAD_TTL_SECS, UPLOAD_TIMEOUT_SECS, UPLOADS_PENDING_PER_USER, UPLOADS_IN_FLIGHT_PER_USER, CLAMD_ADDR, LOG_FORMAT,
RUST_LOG.";

const DATABASE_SETTINGS: &str = "Settings (environment or .env): DATABASE_URL, DATABASE_MAX_CONNECTIONS,
DATABASE_ACQUIRE_TIMEOUT_SECS, LOG_FORMAT, RUST_LOG.";

#[derive(Debug, Parser)]
#[command(name = "ticketdesk", version, about = "Ticket Management API server", after_help = SERVE_SETTINGS)]
pub struct Cli {
    /// Create the demo users alice, bob and carol if they do not exist (when serving).
    #[arg(long)]
    pub demo: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API, Swagger UI at /docs (the default command).
    #[command(after_help = SERVE_SETTINGS)]
    Serve {
        /// Create the demo users alice, bob and carol if they do not exist.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations, then exit (serving applies them too).
    #[command(after_help = DATABASE_SETTINGS)]
    Migrate,
    /// Create, list and manage users, e.g. the first admin of a new database.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the OpenAPI document (JSON), then exit. Needs no database and reads no settings.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input (one line), never from arguments.
    #[command(after_help = DATABASE_SETTINGS)]
    Create {
        username: String,
        /// customer, agent or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List users as tab-separated id, username, role, active.
    #[command(after_help = DATABASE_SETTINGS)]
    List {
        /// Only users with this role.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
    },
    /// Set a user's password, read from standard input; their existing tokens stop working.
    #[command(after_help = DATABASE_SETTINGS)]
    SetPassword { username: String },
    /// Deactivate a user: no more logins, and their tokens stop working at once.
    #[command(after_help = DATABASE_SETTINGS)]
    Deactivate { username: String },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::try_from(raw.to_owned()).map_err(|_| "expected customer, agent or admin".to_owned())
}

/// Runs a `user` command against the configured database; `input` supplies passwords.
pub async fn run_user_command(
    command: UserCommand,
    config: &Config,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<()> {
    let store = store::connect(&config.database_url, &config.database_pool).await?;
    let passwords = Passwords::for_this_machine(config.password_hash_queue);
    match command {
        UserCommand::Create { username, role } => {
            let username = Username::parse(&username)?;
            let password = read_new_password(input, username.as_str())?;
            let user = NewUser {
                username: username.as_str().to_owned(),
                password_hash: passwords.hash(password.as_str()).await?,
                role,
            };
            let created = store.create_user(&user).await?;
            written(writeln!(
                out,
                "created {} ({}) with id {}",
                created.username,
                created.role.as_str(),
                created.id
            ))
        }
        UserCommand::List { role } => {
            let filter = UserFilter { role, active: None };
            let mut after = None;
            loop {
                let page = store.users(&filter, after, 500).await?;
                for user in &page {
                    written(writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        user.id,
                        user.username,
                        user.role.as_str(),
                        user.active
                    ))?;
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.id),
                    _ => break Ok(()),
                }
            }
        }
        UserCommand::SetPassword { username } => {
            let id = user_id(store.as_ref(), &username).await?;
            let password = read_new_password(input, &username)?;
            store.set_password(id, &passwords.hash(password.as_str()).await?, &[]).await?;
            written(writeln!(out, "password of {username} changed; their earlier tokens no longer work"))
        }
        UserCommand::Deactivate { username } => {
            let id = user_id(store.as_ref(), &username).await?;
            store.update_user(id, &UserChange { role: None, active: Some(false) }).await?;
            written(writeln!(out, "{username} is deactivated"))
        }
    }
}

fn written(result: std::io::Result<()>) -> Result<()> {
    result.map_err(|e| Error::Internal(format!("writing the output failed: {e}")))
}

async fn user_id(store: &dyn Store, username: &str) -> Result<crate::domain::UserId> {
    let credentials = store.user_credentials(username).await?;
    credentials.map(|c| c.user.id).ok_or_else(|| Error::Validation(format!("there is no user {username:?}")))
}

fn read_new_password(input: &mut dyn BufRead, username: &str) -> Result<NewPassword> {
    if std::io::stdin().is_terminal() {
        eprint!("New password for {username} (it will show as you type): ");
    }
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| Error::Internal(format!("reading the password failed: {e}")))?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    Ok(NewPassword::parse(password, username)?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_demo_flag_still_serves() {
        let cli = Cli::try_parse_from(["ticketdesk", "--demo"]).unwrap();
        assert!(cli.demo && cli.command.is_none());
        let cli = Cli::try_parse_from(["ticketdesk", "serve", "--demo"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Serve { demo: true })));
    }

    #[test]
    fn user_commands_parse_and_reject_unknown_roles() {
        let cli = Cli::try_parse_from(["ticketdesk", "user", "create", "root", "--role", "admin"]).unwrap();
        assert!(matches!(cli.command, Some(Command::User(UserCommand::Create { role: Role::Admin, .. }))));
        assert!(Cli::try_parse_from(["ticketdesk", "user", "create", "root", "--role", "god"]).is_err());
        assert!(
            Cli::try_parse_from(["ticketdesk", "user", "create", "root"]).is_err(),
            "the role is required"
        );
    }
}
