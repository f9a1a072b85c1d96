//! `momo-provision`: the MoMo sandbox provisioning command, run by an operator with the deploy
//! credentials (not a Lambda function, not a route). It creates the sandbox API user and key and
//! writes them into the `momo` secret: Secrets Manager when `MOMO_SECRET_ID` is set, else the
//! local secrets file. Running it again leaves a working setup as it is.
//!
//! ```sh
//! MOMO_SECRET_ID=<MomoSecretArn> cargo run -p gatehouse-functions --bin momo-provision -- \
//!   --subscription-key <collection subscription key> --callback-host auth.example.com
//! ```

use gatehouse::momo::{self, Provisioned};

fn usage() -> ! {
    eprintln!(
        "usage: momo-provision --subscription-key KEY [--callback-host HOST]\n\
         (the callback host defaults to PUBLIC_BASE_URL's host)"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    gatehouse::telemetry::init();
    let (mut key, mut host) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--subscription-key" => key = args.next(),
            "--callback-host" => host = args.next(),
            _ => usage(),
        }
    }
    let momo: momo::Momo = gatehouse::context::from_env().await?;
    let host = match host.or_else(|| {
        momo.config
            .public_base_url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
    }) {
        Some(h) => h,
        None => usage(),
    };
    let Some(key) = key else { usage() };
    match momo::provision(&momo, &key, &host).await? {
        Provisioned::AlreadyWorking(user) => {
            println!("MoMo API user {user} still works; nothing changed")
        }
        Provisioned::Created(user) => {
            println!("created MoMo API user {user} (callback host {host}) and stored its key")
        }
    }
    Ok(())
}
