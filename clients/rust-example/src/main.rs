//! Writes torsh routing decisions as the JSON moe-metricsd accepts.
//!
//! torsh's `RoutingDecision` (crates/torsh-distributed/src/expert_parallelism/router.rs) derives
//! serde's `Serialize`; the structs below mirror it field for field, so `serde_json::to_string`
//! of a torsh decision is already a valid decision body. The daemon wants a few more fields
//! (layer, worker, step, top-k, capacity), which travel in the same JSON object:
//! `#[serde(flatten)]` puts them beside the decision's own fields.
//!
//! Run: `cargo run > decisions.json`, then post the array in one request:
//! `curl -H 'Content-Type: application/json' --data-binary @decisions.json http://127.0.0.1:9477/v1/decisions`
//! (or print one object per line and send it as `application/x-ndjson`).
//!
//! With daemon URLs, `cargo run -- http://10.0.0.1:9477 http://10.0.0.2:9477` posts the decisions
//! itself, each layer to one daemon chosen by `daemon_for_layer` (sharding by layer: every worker's
//! decisions of a layer meet in one daemon, so its per-step numbers are those of the global batch).

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;

/// One accepted (token, expert) pair, as torsh's router emits it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpertAssignment {
    pub expert_id: usize,
    /// Softmax score of this expert for this token, in 0..1.
    pub probability: f32,
    pub token_idx: usize,
    /// 0 for the token's best expert, 1 for the second, ...
    pub expert_rank: usize,
}

/// torsh's `RoutingDecision`, field for field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutingDecision {
    /// Per token, the assignments that were accepted.
    pub expert_assignments: Vec<Vec<ExpertAssignment>>,
    /// Despite the name: tokens each expert *received* in this batch. Its length is the number
    /// of experts.
    pub expert_capacities: Vec<usize>,
    pub total_tokens: usize,
    pub tokens_dropped: usize,
    /// serde_json writes a NaN or infinite f32 as `null`; the daemon counts it as a non-finite
    /// loss and keeps it out of the averages.
    pub load_balance_loss: f32,
    pub router_z_loss: f32,
    pub auxiliary_loss: f32,
}

/// The envelope moe-metricsd reads around a decision. Optional fields left as `None` are not
/// written at all.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// 1 to 64 characters of `[A-Za-z0-9_.:-]`.
    pub layer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Per-expert capacity in tokens used for this batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expert_capacity: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Tokens each expert was asked for before capacity clipping (each at least its
    /// `expert_capacities` entry), when the router counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expert_demand: Option<&'a [usize]>,
    #[serde(flatten)]
    pub decision: &'a RoutingDecision,
}

/// A small deterministic generator, so the sample output is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }
}

/// FNV-1a, 64 bits, of the layer name's UTF-8 bytes, modulo the number of daemons: the daemon a
/// layer's decisions go to. The Python client uses the same hash, so workers written in either
/// language agree as long as they list the daemons in the same order.
pub fn daemon_for_layer(layer: &str, daemons: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in layer.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % daemons as u64) as usize
}

/// POSTs a JSON body to `url` (`http://host:port`, no TLS) with HTTP/1.1 and returns the status line.
fn post(url: &str, body: &[u8]) -> std::io::Result<String> {
    let authority = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)?;
    let head = format!(
        "POST /v1/decisions HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or("").to_string())
}

/// Routes `tokens` tokens to the top `k` of `experts` experts with torsh's capacity rule
/// `ceil(floor(T*k/E) * capacity_factor)`, skewed towards low expert ids by `skew`. Also returns
/// the demand: how many tokens chose each expert among their top `k`, before capacity clipping.
fn route(rng: &mut Lcg, tokens: usize, experts: usize, k: usize, capacity_factor: f32, skew: f32) -> (RoutingDecision, usize, Vec<usize>) {
    let capacity = (((tokens * k / experts) as f32) * capacity_factor).ceil() as usize;
    let mut load = vec![0usize; experts];
    let mut demand = vec![0usize; experts];
    let mut assignments = Vec::with_capacity(tokens);
    let mut dropped = 0;
    let mut mean_prob = vec![0f32; experts];
    for token in 0..tokens {
        let logits: Vec<f32> = (0..experts).map(|e| rng.next_f32() * 2.0 - skew * e as f32 / experts as f32).collect();
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|x| x / sum).collect();
        for (e, p) in probs.iter().enumerate() {
            mean_prob[e] += p / tokens as f32;
        }
        let mut order: Vec<usize> = (0..experts).collect();
        order.sort_by(|a, b| probs[*b].partial_cmp(&probs[*a]).unwrap());
        let mut accepted = Vec::new();
        for (rank, &e) in order.iter().take(k).enumerate() {
            demand[e] += 1;
            if load[e] < capacity {
                load[e] += 1;
                accepted.push(ExpertAssignment { expert_id: e, probability: probs[e], token_idx: token, expert_rank: rank });
            }
        }
        if accepted.is_empty() {
            dropped += 1;
        }
        assignments.push(accepted);
    }
    // Switch Transformer load-balance loss: E * sum_e(fraction routed to e * mean probability of e).
    let assigned: usize = load.iter().sum();
    let lb: f32 = experts as f32
        * (0..experts).map(|e| load[e] as f32 / assigned.max(1) as f32 * mean_prob[e]).sum::<f32>();
    let decision = RoutingDecision {
        expert_assignments: assignments,
        expert_capacities: load,
        total_tokens: tokens,
        tokens_dropped: dropped,
        load_balance_loss: lb,
        router_z_loss: 0.0,
        auxiliary_loss: lb,
    };
    (decision, capacity, demand)
}

fn main() {
    let mut rng = Lcg(42);
    let (experts, k, capacity_factor) = (8, 2, 1.0);
    let mut decisions = Vec::new();
    for (layer, skew) in [("decoder.0.moe", 0.2f32), ("decoder.1.moe", 3.0)] {
        let (mut decision, capacity, demand) = route(&mut rng, 16, experts, k, capacity_factor, skew);
        if layer == "decoder.1.moe" {
            // A diverging router: serde_json writes this NaN as null.
            decision.router_z_loss = f32::NAN;
        }
        decisions.push((layer, decision, capacity, demand));
    }
    let envelopes: Vec<Envelope> = decisions
        .iter()
        .map(|(layer, decision, capacity, demand)| Envelope {
            layer,
            worker: Some("rank0"),
            step: Some(1),
            top_k: Some(k),
            expert_capacity: Some(*capacity),
            capacity_factor: Some(capacity_factor),
            latency_ms: Some(0.25),
            expert_demand: Some(demand),
            decision,
        })
        .collect();
    let daemons: Vec<String> = std::env::args().skip(1).collect();
    if daemons.is_empty() {
        println!("{}", serde_json::to_string_pretty(&envelopes).expect("decisions serialize"));
        return;
    }
    // One request per daemon with the layers that hash to it.
    for (i, url) in daemons.iter().enumerate() {
        let mine: Vec<&Envelope> =
            envelopes.iter().filter(|e| daemon_for_layer(e.layer, daemons.len()) == i).collect();
        if mine.is_empty() {
            continue;
        }
        let body = serde_json::to_vec(&mine).expect("decisions serialize");
        match post(url, &body) {
            Ok(status) => eprintln!("{url}: {} layer(s): {status}", mine.len()),
            Err(error) => eprintln!("{url}: {error}"),
        }
    }
}
