//! Join benchmarks, run by `bench/run` (ignored in `scripts/test`: timings are measured, never
//! asserted). Time to first frame over 50 joins with a 4 s GOP, and the keyframe requests a
//! WebRTC publisher receives when 20 viewers join at once.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use interop_tests::{Browser, Ffmpeg, Server};
use serde_json::Value;

/// `join(channel)`: a bare WHEP viewer; resolves with the ms from creating the peer connection
/// (offer, ICE gathering, POST, ICE, DTLS) to the first video frame presented.
const JOIN_JS: &str = r#"
window.join = async function (ch) {
  const t0 = performance.now();
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const v = document.createElement("video");
  v.muted = true; v.autoplay = true; v.width = 160;
  document.body.appendChild(v);
  const first = new Promise(r => v.requestVideoFrameCallback(() => r(performance.now())));
  pc.ontrack = e => {
    if (e.track.kind === "video") { v.srcObject = new MediaStream([e.track]); v.play().catch(() => {}); }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => {
    if (pc.iceGatheringState === "complete") return r();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); };
    setTimeout(r, 1000);
  });
  const res = await fetch("/whep/" + ch, {
    method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
  });
  const loc = res.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  const t = await Promise.race([first, new Promise(r => setTimeout(() => r(null), 10000))]);
  return { ms: t === null ? null : Math.round(t - t0), pc, v, loc };
};
window.leave = function (j) {
  j.pc.close(); j.v.remove();
  fetch(j.loc, { method: "DELETE" }).catch(() => {});
};
return true;
"#;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn wait_done(browser: &Browser, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let v = browser.eval("return window.bench || null;").await?;
        if v["done"] == true {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "benchmark did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by bench/run"]
async fn ttff_over_50_joins_with_a_4s_gop() -> Result<()> {
    let server = Server::start(None)?;
    let gop = [
        "-profile:v",
        "high",
        "-bf",
        "0",
        "-g",
        "120",
        "-keyint_min",
        "120",
        "-sc_threshold",
        "0",
    ];
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("gop4"), &gop)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("gop4")?.is_some())
    })?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/healthz")).await?;
    browser.eval(JOIN_JS).await?;
    // Joins at pseudo-random points of the GOP: 50 in a row, 0-700 ms apart.
    browser
        .eval(
            "window.bench = { ms: [], done: false };
             (async () => {
               for (let i = 0; i < 50; i++) {
                 const j = await join('gop4');
                 window.bench.ms.push(j.ms);
                 leave(j);
                 await new Promise(r => setTimeout(r, (i * 137) % 700));
               }
               window.bench.done = true;
             })();
             return true;",
        )
        .await?;
    let v = wait_done(&browser, Duration::from_secs(300)).await?;
    let all = v["ms"].as_array().context("ms")?;
    let mut ms: Vec<f64> = all.iter().filter_map(Value::as_f64).collect();
    ms.sort_by(f64::total_cmp);
    ensure!(!ms.is_empty(), "no join decoded a frame: {v}");
    println!(
        "| TTFF, 50 joins, 4 s GOP (RTMP, Chromium) | {} of {} decoded | p50 {:.0} ms | p95 {:.0} ms | max {:.0} ms |",
        ms.len(),
        all.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms[ms.len() - 1]
    );
    browser.close().await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by bench/run"]
async fn keyframe_requests_when_20_viewers_join_at_once() -> Result<()> {
    let server = Server::start(None)?;
    let publisher = Browser::start().await?;
    publisher
        .client
        .goto(&server.url("/publish/pli?autostart=1&simulcast=0"))
        .await?;
    server.wait_for(Duration::from_secs(30), || {
        Ok(server.channel("pli")?.is_some_and(|c| {
            c["tracks"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["name"] == "video" && !t["latest_group"].is_null())
            })
        }))
    })?;
    // Let the encoder's first group grow old, so joins cannot be answered from the cache.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let requests = |server: &Server| -> Result<f64> {
        let (_, m) = server.get("/metrics")?;
        let line = m
            .lines()
            .find(|l| l.starts_with("starling_publisher_keyframe_requests_total "))
            .context("metric")?;
        Ok(line.rsplit(' ').next().unwrap_or("0").parse()?)
    };
    let before = requests(&server)?;
    let viewers = Browser::start().await?;
    viewers.client.goto(&server.url("/healthz")).await?;
    viewers.eval(JOIN_JS).await?;
    viewers
        .eval(
            "window.bench = { ms: [], done: false };
             Promise.all(Array.from({ length: 20 }, () => join('pli'))).then(js => {
               window.bench.ms = js.map(j => j.ms);
               window.bench.done = true;
             });
             return true;",
        )
        .await?;
    let v = wait_done(&viewers, Duration::from_secs(60)).await?;
    let after = requests(&server)?;
    let mut ms: Vec<f64> = v["ms"]
        .as_array()
        .context("ms")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "| 20 viewers join a WHIP publisher at once | {} decoded | keyframe requests sent: {} | TTFF p50 {:.0} ms, max {:.0} ms |",
        ms.len(),
        after - before,
        if ms.is_empty() { f64::NAN } else { percentile(&ms, 0.5) },
        ms.last().copied().unwrap_or(f64::NAN),
    );
    viewers.close().await?;
    publisher.close().await
}
