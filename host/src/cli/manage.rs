//! `refract promote`, `refract rollback` and `refract abort`: change which version of
//! a projector serves, on the running host.

use anyhow::Result;
use clap::Args;

use super::client::{Client, ClientError, wire};

/// The projector to act on.
#[derive(Debug, Args)]
pub struct ManageArgs {
    /// The projector's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Swap the caught-up shadow in now.
    Promote,
    /// Reactivate the previous version.
    Rollback,
    /// Drop the running shadow.
    Abort,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::Abort => "abort",
        }
    }
}

/// Runs `refract promote|rollback|abort <name>`.
pub fn run(client: &Client, action: Action, args: &ManageArgs) -> Result<()> {
    let path = format!("/v1/projectors/{}/{}", args.name, action.path());
    let changed: wire::Changed = match client.post_json(&path, &serde_json::json!({})) {
        Ok(changed) => changed,
        Err(ClientError::Unreachable { url, .. }) => anyhow::bail!(
            "`refract {}` needs a running host, and none answers at {url}; start one with \
             `refract run` (or pass --url)",
            action.path()
        ),
        Err(error) => return Err(error.into()),
    };
    let (projector, version) = (changed.projector, changed.version);
    match action {
        Action::Promote => println!("promoted: `{projector}` now serves version {version}"),
        Action::Rollback => println!("rolling back: `{projector}` returns to version {version}"),
        Action::Abort => println!("aborted: version {version} of `{projector}` was dropped"),
    }
    Ok(())
}
