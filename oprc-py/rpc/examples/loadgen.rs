//! The load generator of `benchmarks/rpc.py`: `callers` concurrent callers, each calling
//! one method of its own object (`InvokeObj`) or a function (`InvokeFn`) over one HTTP/2
//! connection (or `--connections`), on a single-threaded tokio runtime. Prints one JSON
//! object: calls, calls/s, latency percentiles (us), and its own CPU time (user + system
//! seconds, and as a share of one core over the run), so a run shows whether the client
//! was the limit.
//!
//! ```text
//! cargo run --release --example loadgen -- --target 127.0.0.1:8080 --callers 64 \
//!     --calls 20000 [--rpc obj|fn] [--cls example.Counter] [--fn hello] \
//!     [--payload '"x"'] [--object-base 1000000] [--connections 1] [--seconds 0]
//! ```
//!
//! Every caller makes one untimed call first (connections open, objects exist). A call
//! whose status is not OKAY, or that fails, ends the run with exit status 1.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oprc_rpc::pb::oprc_function_client::OprcFunctionClient;
use oprc_rpc::pb::{InvocationRequest, ObjectInvocationRequest};
use tonic::transport::{Channel, Endpoint};

struct Opts {
    target: String,
    callers: usize,
    calls: usize,
    rpc_obj: bool,
    cls: String,
    func: String,
    payload: Bytes,
    object_base: u64,
    connections: usize,
}

fn parse() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let num = |name: &str, default: &str| -> Result<u64, String> {
        get(name, default)
            .parse::<u64>()
            .map_err(|e| format!("{name}: {e}"))
    };
    let rpc = get("--rpc", "obj");
    if rpc != "obj" && rpc != "fn" {
        return Err(format!("--rpc: obj or fn, not {rpc:?}"));
    }
    Ok(Opts {
        target: get("--target", "127.0.0.1:8080"),
        callers: num("--callers", "1")?.max(1) as usize,
        calls: num("--calls", "10000")? as usize,
        rpc_obj: rpc == "obj",
        cls: get("--cls", "example.Counter"),
        func: get("--fn", "hello"),
        payload: Bytes::from(get("--payload", "\"x\"").into_bytes()),
        object_base: num("--object-base", "1000000")?,
        connections: num("--connections", "1")?.max(1) as usize,
    })
}

/// User and system CPU seconds of this process so far.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: rusage is a plain C struct of integers, valid when all-zero.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass, which outlives the call;
    // RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

async fn call(client: &mut OprcFunctionClient<Channel>, o: &Opts, oid: &str) -> Result<(), String> {
    let resp = if o.rpc_obj {
        client
            .invoke_obj(ObjectInvocationRequest {
                cls_id: o.cls.clone(),
                fn_id: o.func.clone(),
                payload: o.payload.clone(),
                object_id: Some(oid.to_string()),
                ..Default::default()
            })
            .await
    } else {
        client
            .invoke_fn(InvocationRequest {
                cls_id: o.cls.clone(),
                fn_id: o.func.clone(),
                payload: o.payload.clone(),
                ..Default::default()
            })
            .await
    };
    match resp {
        Ok(r) if r.get_ref().status == 0 => Ok(()),
        Ok(r) => Err(format!(
            "status {} payload {:?}",
            r.get_ref().status,
            r.get_ref().payload
        )),
        Err(s) => Err(format!("gRPC {s}")),
    }
}

async fn run(o: Opts) -> Result<String, String> {
    let o = std::sync::Arc::new(o);
    let mut channels = Vec::new();
    for _ in 0..o.connections {
        let ep = Endpoint::from_shared(format!("http://{}", o.target))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(30));
        channels.push(ep.connect().await.map_err(|e| format!("connect: {e}"))?);
    }
    let per_caller = (o.calls / o.callers).max(1);
    let mut clients = Vec::new();
    for i in 0..o.callers {
        let mut c = OprcFunctionClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let oid = (o.object_base + i as u64).to_string();
        call(&mut c, &o, &oid).await?; // warm-up
        clients.push((c, oid));
    }
    let (u0, s0) = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut c, oid) in clients {
        let o = o.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_caller);
            for _ in 0..per_caller {
                let t = Instant::now();
                call(&mut c, &o, &oid).await?;
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, String>(lat)
        });
    }
    let mut lat = Vec::with_capacity(per_caller * o.callers);
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.map_err(|e| e.to_string())??);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds();
    lat.sort_by(f64::total_cmp);
    let n = lat.len();
    let pct = |p: usize| lat[(n * p / 100).min(n - 1)] * 1e6;
    let mean = lat.iter().sum::<f64>() / n as f64 * 1e6;
    let cpu = (u1 - u0) + (s1 - s0);
    Ok(format!(
        "{{\"callers\": {}, \"calls\": {n}, \"wall_s\": {wall:.4}, \"calls_per_s\": {:.0}, \
         \"p50_us\": {:.0}, \"p99_us\": {:.0}, \"mean_us\": {mean:.0}, \
         \"client_cpu_s\": {cpu:.4}, \"client_cpu_user_s\": {:.4}, \
         \"client_cpu_sys_s\": {:.4}, \"client_cpu_share\": {:.3}}}",
        o.callers,
        n as f64 / wall,
        pct(50),
        pct(99),
        u1 - u0,
        s1 - s0,
        cpu / wall
    ))
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(o)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}
