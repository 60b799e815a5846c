//! `refract demo`: the README's first command. Builds the example projectors from this
//! source tree, seeds a demo log, and starts the host (`refract run`) on the data
//! directory, printing where to look and what to try.

use anyhow::{Context as _, Result};
use clap::Args;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::guest_build::build_guests;
use crate::log::{EventLog, NewEvent};

use super::run::RunArgs;

/// The example projectors the demo starts with, and the file each gets in the plugins
/// folder. `cars-v2` is built too, for the hot-swap step the demo suggests.
const DEMO_PLUGINS: [(&str, &str); 4] = [
    ("balances", "balances.wasm"),
    ("cars-v1", "cars.wasm"),
    ("order-summary", "order-summary.wasm"),
    ("order-saga", "order-saga.wasm"),
];

/// How long the demo's unpaid order waits for its payment before the saga cancels it.
const DEMO_PAYMENT_TIMEOUT_MS: u64 = 30_000;

/// How long the demo waits for the saga's state to exist before it gives up placing
/// its orders (the host is still starting, or the saga failed to load).
const DEMO_SAGA_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The seed of the demo's generated events, so every demo log is the same.
const DEMO_SEED: u64 = 2026;

/// Build the example projectors, seed a demo log, and start the host.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Prepare the data directory but do not start the host.
    #[arg(long)]
    pub no_run: bool,

    #[command(flatten)]
    run: RunArgs,
}

/// Runs `refract demo`.
pub fn run(data: &DataDir, config: Config, args: &DemoArgs, token: Option<&str>) -> Result<()> {
    eprintln!("building the example projectors (cargo, target wasm32-wasip2)...");
    let mut packages: Vec<&str> = DEMO_PLUGINS.iter().map(|(package, _)| *package).collect();
    packages.push("cars-v2");
    let components = build_guests(&packages)?;
    let plugins = args
        .run
        .plugins
        .clone()
        .or_else(|| config.plugins_dir.clone())
        .unwrap_or_else(|| data.plugins());
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create the plugins folder {}", plugins.display()))?;
    for ((_, file), component) in DEMO_PLUGINS.iter().zip(&components) {
        let target = plugins.join(file);
        // Only on a first demo: after a hot swap, cars.wasm is the user's v2.
        if !target.exists() {
            std::fs::copy(component, &target).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    component.display(),
                    target.display()
                )
            })?;
        }
    }
    let cars_v2 = &components[DEMO_PLUGINS.len()];

    let log = EventLog::open(&data.events_db(), config.log_options())
        .with_context(|| format!("cannot use the data directory `{}`", data.root().display()))?;
    let first_demo = log.head()? == 0;
    if first_demo {
        let mut events: Vec<NewEvent> = crate::workload::balances(DEMO_SEED, 20_000).collect();
        events.extend(crate::workload::cars_story(1));
        events.extend(crate::workload::orders(DEMO_SEED, 500));
        let count = events.len();
        for chunk in events.chunks(1000) {
            log.append(chunk.to_vec())?;
        }
        eprintln!("seeded the demo log with {count} events");
    }
    drop(log);

    let exe = std::env::current_exe()
        .map_or_else(|_| "refract".to_owned(), |path| path.display().to_string());
    let dir = data.root().display();
    let stable = |name: &str| data.stable_db(name).display().to_string();
    println!(
        "\nRefract demo: data in {dir}\n\
         \n\
         Where to look (in another terminal):\n\
         \x20 {exe} --data-dir {dir} status\n\
         \x20 sqlite3 {balances} 'SELECT * FROM balances ORDER BY balance DESC LIMIT 5'\n\
         \x20 sqlite3 {cars} 'SELECT car_id, color, customer_name FROM cars'\n\
         \n\
         Append an event and watch the read model follow:\n\
         \x20 {exe} --data-dir {dir} append --stream account-acc-0001 --type money.deposited --data '{{\"account\":\"acc-0001\",\"amount\":500}}'\n\
         \n\
         Hot swap: cars v1 keeps a renamed customer's old name (Bob). Deploy v2, which\n\
         replays the log into a shadow read model and swaps it in with no downtime:\n\
         \x20 cp {v2} {plugins}/cars.wasm\n\
         \x20 sqlite3 {cars} 'SELECT car_id, color, customer_name FROM cars'   # now Charlie\n\
         \x20 {exe} --data-dir {dir} diff cars                                # v2 against v1\n\
         \n\
         Or do all of this in the web console: open the `console:` address printed\n\
         below and sign in with the token in {dir}/token. Its Deploy page uploads\n\
         \x20 {v2}\n\
         and shows the replay, the diff (Bob becomes Charlie) and the swap.\n\
         \n\
         The order-saga reactor reacts to new orders by emitting events. Once the host is\n\
         up, the demo places three orders (order-demo-1 is paid, order-demo-2 declined,\n\
         order-demo-3 times out after {timeout} s); watch the saga's events with\n\
         \x20 {exe} --data-dir {dir} tail --from-offset 1 --type payment.requested --type order.confirmed --type order.cancelled --type stock.released --type refract.timer\n",
        timeout = DEMO_PAYMENT_TIMEOUT_MS / 1000,
        balances = stable("balances"),
        cars = stable("cars"),
        v2 = cars_v2.display(),
        plugins = plugins.display(),
    );
    if args.no_run {
        return Ok(());
    }
    if first_demo {
        let (data, options) = (data.clone(), config.log_options());
        std::thread::spawn(move || place_demo_orders(&data, options));
    }
    super::run::run(data, config, &args.run, token)
}

/// Places the demo's three orders and their payment results, once the saga's state
/// exists: a reactor acts only on events after its first version started.
fn place_demo_orders(data: &DataDir, options: crate::log::LogOptions) {
    let started = std::time::Instant::now();
    while !crate::reactors::state_created(&data.projector_dir("order-saga")) {
        if started.elapsed() > DEMO_SAGA_WAIT {
            eprintln!("the order-saga reactor did not start; the demo placed no orders");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let order = |id: &str| {
        NewEvent::new(
            id,
            "order.placed",
            serde_json::json!({"customer": "demo", "total": 4200, "payment_timeout_ms": DEMO_PAYMENT_TIMEOUT_MS})
                .to_string(),
        )
    };
    let payment = |id: &str, outcome: &str| {
        NewEvent::new(
            format!("payment-{id}"),
            outcome,
            serde_json::json!({"order_id": id, "reason": "card declined"}).to_string(),
        )
    };
    let placed = EventLog::open(&data.events_db(), options).and_then(|log| {
        log.append(vec![
            order("order-demo-1"),
            order("order-demo-2"),
            order("order-demo-3"),
        ])?;
        log.append(vec![
            payment("order-demo-1", "payment.succeeded"),
            payment("order-demo-2", "payment.failed"),
        ])
    });
    if let Err(error) = placed {
        eprintln!("the demo could not place its orders: {error}");
    }
}
