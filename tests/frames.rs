//! Frame-streamed synthesis through the whole server, against the raw engine
//! (piper's own Python API) on the same sentence, with the noise scales at 0
//! so that both are deterministic.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// One sentence of 233 characters with commas: before frame streaming it was
/// cut at them, and its audio differed from the engine's whole sentence.
const LONG_SENTENCE: &str = "When the morning train finally pulled into the station, the \
passengers, who had waited for hours in the cold, gathered their bags, checked their tickets \
once more, and stepped onto the platform, relieved that the long night was over.";

/// The raw engine's synthesis of `text`: piper's `PiperVoice.synthesize`,
/// one whole sentence at a time (each scaled to full peak, then `volume`),
/// `silence` seconds of zeros after each, as 16-bit samples.
fn raw_engine(model: &Path, text: &str, volume: f64, silence: f64) -> Vec<i16> {
    let script = r#"
import sys
from piper import PiperVoice, SynthesisConfig
model, text, volume, silence = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
voice = PiperVoice.load(model)
config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, volume=volume)
out = b""
for chunk in voice.synthesize(text, syn_config=config):
    out += chunk.audio_int16_bytes + b"\x00\x00" * int(voice.config.sample_rate * silence)
sys.stdout.buffer.write(out)
"#;
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(model)
        .arg(text)
        .arg(volume.to_string())
        .arg(silence.to_string())
        .output()
        .expect("the raw engine runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The one gain that best maps `raw` onto `ours` (least squares), and the
/// largest difference left, in 16-bit steps.
fn fit_one_gain(ours: &[i16], raw: &[i16]) -> (f64, f64) {
    let dot: f64 = ours
        .iter()
        .zip(raw)
        .map(|(&o, &r)| o as f64 * r as f64)
        .sum();
    let norm: f64 = raw.iter().map(|&r| r as f64 * r as f64).sum();
    let gain = dot / norm;
    let worst = ours
        .iter()
        .zip(raw)
        .map(|(&o, &r)| (o as f64 - gain * r as f64).abs())
        .fold(0.0, f64::max);
    (gain, worst)
}

/// The server's log without its colours.
fn plain_log(server: &Server) -> String {
    let log = server.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn deterministic(text: &str, volume: f64, silence: f64) -> serde_json::Value {
    json!({
        "text": text,
        "stream": true,
        "noise_scale": 0.0,
        "noise_w_scale": 0.0,
        "volume": volume,
        "sentence_silence": silence,
    })
}

/// A split graph and calibration may be made on first use: on a busy
/// machine that takes longer than a warm start.
const SLOW_START: (&str, &str) = ("PIPER_ENGINE_START_TIMEOUT", "300");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sentence_with_commas_is_the_raw_engines_whole_sentence_up_to_one_gain() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[SLOW_START]);
    let (volume, silence) = (0.5, 0.25);
    let body = deterministic(LONG_SENTENCE, volume, silence);
    let (status, _, bytes) = post(&server, "/api/tts", body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let ours = parse_streamed_wav(&bytes).samples;
    let log = plain_log(&server);
    assert!(
        log.contains("chunked=true"),
        "the engine did not synthesize in decoder chunks: {log}"
    );

    let model = dir.path().join(format!("{VOICE}.onnx"));
    let raw = raw_engine(&model, LONG_SENTENCE, volume, silence);
    // Same length: the sentence was not cut (every cut is spoken as if the
    // sentence ended there, and changes its length).
    assert_eq!(
        ours.len(),
        raw.len(),
        "a different length: the sentence was cut"
    );
    let tail = (22_050.0 * silence) as usize;
    assert!(
        ours[ours.len() - tail..].iter().all(|&s| s == 0),
        "the sentence silence is missing"
    );
    let speech = ours.len() - tail;
    let (gain, worst) = fit_one_gain(&ours[..speech], &raw[..speech]);
    // Piper scales a sentence to full peak, piperd by the voice's gain: one
    // constant ratio, and then every sample within rounding (one step on each
    // side, scaled), chunk boundaries included.
    assert!(gain > 0.1 && gain < 2.0, "gain {gain}");
    assert!(
        worst <= 3.0,
        "sample off by {worst} steps after one gain of {gain}: the chunks do not join"
    );
    // Volume multiplies the voice's one gain: half the volume, half the
    // samples (both below the limiter's knee), within rounding: a step on
    // our side, two on the quieter one's once doubled, and float noise.
    let (status, _, quiet) = post(
        &server,
        "/api/tts",
        deterministic(LONG_SENTENCE, volume / 2.0, silence),
    )
    .await;
    assert_eq!(status, 200);
    let quiet = parse_streamed_wav(&quiet).samples;
    let (ratio, off) = fit_one_gain(&ours[..speech], &quiet[..speech]);
    assert!(
        (ratio - 2.0).abs() < 0.01 && off <= 4.0,
        "volume {volume} against {}: {ratio}, {off}",
        volume / 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sentence_streams_its_first_audio_before_its_end() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[SLOW_START]);
    // Warm the engine first, so that only this sentence's synthesis is timed.
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Ready."})).await;
    assert_eq!(status, 200);
    let text = format!("{LONG_SENTENCE} {LONG_SENTENCE}").replace(". ", ", and ");
    let mut stream = post_stream(&server, "/api/tts", deterministic(&text, 1.0, 0.0)).await;
    use futures::StreamExt;
    let mut first = 0;
    while first <= 44 {
        first += stream.next().await.expect("audio").unwrap().len();
    }
    // One sentence, not yet done: its first chunk went out alone.
    assert_still_synthesizing(&server).await;
    let mut total = first;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert!(
        first < total / 2,
        "first audio came with {first} of {total} bytes: not mid-sentence"
    );
}

/// The voice's model with its decoder's upsampling layers renamed: piper
/// runs it the same, but piperd cannot find the decoder to split it.
fn unsplittable_voice(dir: &Path) {
    let script = r#"
import sys, onnx
model = onnx.load(sys.argv[1])
renamed = {}
for init in model.graph.initializer:
    if init.name.startswith("dec.ups."):
        renamed[init.name] = "upsampling_" + init.name[len("dec.ups."):]
        init.name = renamed[init.name]
for node in model.graph.node:
    for i, name in enumerate(node.input):
        if name in renamed:
            node.input[i] = renamed[name]
assert renamed, "no upsampling layers found"
onnx.save(model, sys.argv[2])
"#;
    let source = root().join(format!("voices/{VOICE}.onnx"));
    let target = dir.join("unsplittable.onnx");
    std::fs::remove_file(&target).ok();
    let status = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&source)
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_whose_graph_cannot_be_split_speaks_whole_sentences_with_a_warning() {
    let dir = voices(&["unsplittable"]);
    unsplittable_voice(dir.path());
    let server = Server::start(dir.path(), &[SLOW_START]);
    let text = "A voice that cannot stream, still speaking, as it always did.";
    let (status, _, bytes) = post(&server, "/api/tts", deterministic(text, 0.8, 0.1)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let ours = parse_streamed_wav(&bytes).samples;
    let log = plain_log(&server);
    assert!(
        log.contains("cannot be split") && log.contains("chunked=false"),
        "no warning: {log}"
    );
    // The whole-sentence path is piper's own: the same samples.
    let raw = raw_engine(&dir.path().join("unsplittable.onnx"), text, 0.8, 0.1);
    assert_eq!(ours.len(), raw.len());
    let worst = ours
        .iter()
        .zip(&raw)
        .map(|(&o, &r)| (o as i32 - r as i32).abs())
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "whole-sentence audio differs from piper's by {worst}"
    );
}

/// The engine's chunk plan (`StreamVoice.plan` in engine/stream_synth.py),
/// for sentences of 1 to 2,000 frames on measured calibrations (with one
/// decoder graph, and with the flow and vocoder margins apart), on every
/// core and on one thread of two (`slowdown`): every frame decoded once,
/// playback never runs dry under the measured decode cost at that speed,
/// never more chunks than the fixed schedule, chunks beside others no
/// larger than `SHARED_MAX_CHUNK` (memory), and a short sentence that a
/// listener waits on no longer pays a third chunk's margins for a short
/// tail (found measuring Wyoming's total time against wyoming-piper).
#[test]
fn the_chunk_plan_keeps_playback_ahead_and_spends_fewer_margins() {
    assert_prints_ok(plan_check(
        r#"
import itertools

def fixed(schedule, frames):
    sizes = itertools.chain(schedule, itertools.repeat(schedule[-1]))
    chunks = []
    while sum(chunks) < frames:
        chunks.append(min(next(sizes), frames - sum(chunks)))
    return chunks

frame_s = 256 / 22050
spared = {}
calibrations = [
    ss.Calibration(32, 32, 0.0053, 0.0006, 1.0, {}),
    ss.Calibration(32, 32, 0.0, 0.00042, 1.0, {}),
    ss.Calibration(16, 16, 0.0023, 0.0004, 1.0, {}, 16, 0.17),
]
for k, calibration in enumerate(calibrations):
    v = voice(calibration)
    c = v.calibration
    alpha, beta = c.alpha, c.beta
    for slower in (1.0, ss.slowdown(1, 2)):
        for frames in range(1, 2001):
            for first in (True, False):
                plan = v.plan(frames, first, slower)
                assert sum(plan) == frames and min(plan) > 0, (frames, first, plan)
                # Beside others (slower), smaller chunks bound the memory of
                # the chunks in flight.
                largest = ss.MAX_CHUNK if slower == 1.0 else ss.SHARED_MAX_CHUNK
                assert max(plan) <= largest, (frames, first, slower, plan)
                if not first:
                    assert all(n == largest for n in plan[:-1]), plan
                    continue
                schedule = v._schedules[slower]
                # A first chunk beyond the cap only as the whole of a sentence
                # that costs no more than the first chunk with its margin.
                assert plan[0] <= max(schedule[0], ss.FIRST_CHUNK_MAX) or (
                    plan == [frames] and frames <= schedule[0] + c.right_cost), plan
                assert len(plan) <= len(fixed(schedule, frames)), (frames, plan, schedule)
                # Decode at the measured cost; each chunk is done before the
                # audio of those before it has played.
                start, done, played = 0, 0.0, None
                for i, n in enumerate(plan):
                    left = c.left_cost if start > 0 else 0
                    right = c.right_cost if start + n < frames else 0
                    done += (alpha + beta * (n + left + right)) * slower
                    if played is None:
                        played = done
                    assert done <= played + 1e-9, (frames, slower, plan, i, done, played)
                    played += n * frame_s
                    start += n
    spared[k] = (fixed(v.first_schedule, 260), v.plan(260, True))
for fixed_plan, plan in spared.values():
    assert len(plan) < len(fixed_plan), (fixed_plan, plan)
print("ok", spared)
"#,
    ));
}

/// The engine's side-by-side chunk plan (`StreamVoice.parallel_chunks` in
/// engine/stream_synth.py), for sentences of 1 to 2,000 frames on measured
/// calibrations, on 2 and 4 workers: every frame decoded once, the chunks
/// in flight within the decoder's memory bound, playback of a sentence a
/// listener waits on never running dry under the expected cost, and never
/// ending later (within `PLAN_TOLERANCE`) than the rule it replaced, a
/// growing run of chunks after the first and then even ones; a short first
/// sentence (150 to 300 frames, a Home Assistant command's) ends at least
/// 3% sooner. Found measuring Wyoming's total time against wyoming-piper:
/// the first chunk after the head was the longest path. With the next
/// sentence's frontend to make (a job of a measured length), the plan puts
/// it among the chunks, and never ends later than that frontend made alone
/// after them, as before.
#[test]
fn the_side_by_side_plan_ends_sooner_and_keeps_playback_ahead() {
    assert_prints_ok(plan_check(
        r#"
import math

def previous(v, frames, first, workers):
    # The rule before: the schedule's first chunk on every core, then chunks
    # growing to `parallel_chunk` under playback's deadline, then even ones.
    c = v.calibration
    frame_s = v.hop / v.config.sample_rate
    margins = c.left_cost + c.right_cost
    largest = v.parallel_chunk(workers)
    chunks, total = [], frames
    if first:
        head = min(frames, v.first_schedule[0])
        chunks.append(head)
        head_s = (c.alpha + c.beta * (head + c.right_cost)) * ss.SCHEDULE_SAFETY
        free = [head_s] * workers
        start = head
        while start < frames:
            at = min(free)
            ends_by = (head_s + start * frame_s - at) / ss.SCHEDULE_SAFETY
            fits = int((ends_by / ss.ONE_CORE_SLOWER - c.alpha) / c.beta - margins)
            if fits >= largest:
                break
            n = min(frames - start, max(math.ceil(chunks[-1] * ss.CHUNK_GROWTH), fits))
            free[free.index(at)] = at + (c.alpha + c.beta * (n + margins)) * ss.ONE_CORE_SLOWER
            chunks.append(n)
            start += n
        frames -= start
    if frames > 0:
        chunks += v._even(frames, workers)
    head, rest = (chunks[:1], chunks[1:]) if first else ([], chunks)
    return (chunks, [], None) if len(rest) == 1 else (head, rest, None)

def simulate(v, frames, plan, workers, extra=0.0):
    """(when the last chunk is done, [(start frame, when sent)]): chunks on
    every core one after another, then side by side on the first free
    worker, each sent once it and those before it are done; a job of
    `extra` seconds taken by the first free worker before the side chunk at
    the plan's index."""
    c = v.calibration
    def cost(start, n):
        work = n + (c.left_cost if start > 0 else 0) + (c.right_cost if start + n < frames else 0)
        return c.alpha + c.beta * work
    now, start, sent = 0.0, 0, []
    for n in plan[0]:
        now += cost(start, n)
        sent.append((start, now))
        start += n
    free, done = [now] * workers, now
    for k, n in enumerate(plan[1] + [None]):
        if k == plan[2] and n is not None:
            free[free.index(min(free))] += extra
        if k == plan[2] and n is None:
            # Last, on the first free worker.
            free[free.index(min(free))] += extra
        if n is None:
            break
        i = free.index(min(free))
        free[i] += cost(start, n) * ss.SIDE_BY_SIDE_SLOWER
        done = max(done, free[i])
        sent.append((start, done))
        start += n
    return max(free), sent

frame_s = 256 / 22050
calibrations = [
    ss.Calibration(32, 32, 0.0053, 0.0006, 1.0, {}),
    ss.Calibration(32, 32, 0.0, 0.00042, 1.0, {}),
    ss.Calibration(16, 16, 0.00249, 0.000408, 1.0, {}, 16, 0.1583),
]
sooner = {}
for k, calibration in enumerate(calibrations):
    v = voice(calibration)
    for workers in (2, 4):
        largest = v.parallel_chunk(workers)
        for frames in range(1, 2001):
            for first, extra in ((True, 0.0), (False, 0.0), (True, 0.045), (False, 0.045)):
                plan = v.parallel_chunks(frames, first, workers, extra)
                chunks = plan[0] + plan[1]
                # The next frontend goes among the side-by-side chunks when
                # there are any, after the first two of a first sentence.
                assert (plan[2] is None) == (not extra or not plan[1]), plan
                if extra and plan[1] and first:
                    assert plan[2] >= (1 if plan[0] else 2) or plan[2] == len(plan[1]), plan
                if extra:
                    ends, sent = simulate(v, frames, plan, workers, extra)
                    if first:
                        heard = sent[0][1]
                        for start, at in sent[1:]:
                            assert at <= heard + start * frame_s / ss.SCHEDULE_SAFETY + 1e-9, (
                                frames, workers, plan, start, at, heard)
                    # Beside the chunks, not after them all (as before), when
                    # the plan decodes side by side.
                    alone = simulate(v, frames, previous(v, frames, first, workers), workers)[0]
                    if plan[1]:
                        assert ends <= (alone + extra) * ss.PLAN_TOLERANCE + 1e-9, (
                            frames, first, plan, ends, alone)
                    continue
                assert sum(chunks) == frames and min(chunks) > 0, (frames, first, plan)
                # Side by side, the chunks in flight fit the decoder's memory bound.
                assert not plan[1] or max(plan[1]) <= largest, (frames, plan, largest)
                assert len(plan[1]) != 1 and plan[2] is None, plan
                if first and plan[0] and not plan[1]:
                    # Every core only: the schedule's plan, checked by the plan test.
                    assert plan[0] == v.plan(frames, True), plan
                ends, sent = simulate(v, frames, plan, workers)
                if first:
                    heard = sent[0][1]
                    for start, at in sent[1:]:
                        assert at <= heard + start * frame_s / ss.SCHEDULE_SAFETY + 1e-9, (
                            frames, workers, plan, start, at, heard)
                before, _ = simulate(v, frames, previous(v, frames, first, workers), workers)
                assert ends <= before * ss.PLAN_TOLERANCE + 1e-9, (frames, first, workers, plan, ends, before,
                                                                   previous(v, frames, first, workers))
                if workers == 2 and first and 150 <= frames <= 300:
                    sooner.setdefault(k, []).append(ends / before)
for k, ratios in sooner.items():
    # A short first sentence, a Wyoming command's, ends sooner than before.
    assert max(ratios) < 0.97, (k, max(ratios))
print("ok", {k: round(min(r), 3) for k, r in sooner.items()}, {k: round(max(r), 3) for k, r in sooner.items()})
"#,
    ));
}

/// The engine's frontend is one session on every core for every request,
/// whose threads do not spin after a run: a spinning frontend thread took a
/// core from the decoder that runs next (a short sentence alone measured
/// 1.23x the raw engine with it, 1.07x without), and a second frontend
/// session for sentences side by side cost 20 MiB of peak for no speed.
/// Decoding is two graphs, the flow and the vocoder, each with a session
/// per thread count, except that the flow's runs on every core go to its
/// session on one thread (a sentence alone decodes its chunks side by side
/// on one thread each: an every-core flow served only first chunks and the
/// shortest sentences, for 30 MiB); the flow's threads do not spin either (measured: a
/// 314-frame sentence alone on every core decoded in 128 ms with a quiet
/// flow, 169 ms with a spinning one). The vocoder's margin is below the
/// flow's reach, which is what the cut saves: a chunk boundary costs 32 + 32
/// frames of the whole decoder without it. The vocoder's threads spin
/// within a run but stop when it returns: left spinning after a chunk on
/// every core, they took a core from the single-threaded chunks decoded
/// next (the first of them 30 to 60% slower). The vocoder's one-thread
/// session runs its 2-D form (every convolution over a height of one, a
/// fifth faster there), which decodes the same audio as the session on
/// every core. Real voice, real split graph.
#[test]
fn the_frontend_is_one_session_whose_threads_do_not_spin() {
    let script = r#"
import os, sys
sys.path.insert(0, sys.argv[1])
import piper_worker as pw
engine = pw.load_voice(sys.argv[2], sys.argv[2] + ".json")
frontend, flow, vocoder = engine.sessions
assert list(engine.parts) == ["flow", "vocoder"], list(engine.parts)
assert frontend.session(1) is frontend.session(0), "one frontend session"
def spins(sessions):
    options = sessions.session(0).get_session_options()
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:  # not set: onnxruntime's default, spinning
        return True
assert not spins(frontend) and not spins(flow) and spins(vocoder)
# The vocoder's threads spin between the operators of a run, not after it.
stops = vocoder.session(0).get_session_options().get_session_config_entry("session.force_spinning_stop")
assert stops == "1", stops
assert vocoder.session(1) is not vocoder.session(0), "a session per thread count"
# With sentences alone decoded side by side, the flow's runs on every core
# go to its session on one thread.
assert (os.cpu_count() or 1) > 1 and pw.SIDE_BY_SIDE
assert flow.session(0) is flow.session(1), "the flow on every core is on one thread"
assert flow.session(0).get_session_options().intra_op_num_threads == 1
# The vocoder on one thread: its 2-D form, the same audio.
import numpy as np, onnx
assert list(engine.stream.graph.one_thread) == ["vocoder"], engine.stream.graph.one_thread
flat = onnx.load(engine.stream.graph.one_thread["vocoder"])
convs = [n for n in flat.graph.node if n.op_type in ("Conv", "ConvTranspose")]
weights = {i.name: i for i in flat.graph.initializer}
assert convs and all(len(weights[n.input[1]].dims) == 4 for n in convs), "2-D kernels"
# The flow has other operations between its convolutions: no 2-D form.
import split_graph
assert split_graph.as_two_dimensional(onnx.load(engine.stream.graph.parts["flow"])) is None
stream = engine.stream
ids = engine.voice.phonemes_to_ids(engine.voice.phonemize("A quiet evening by the river.")[0])
seam, _ = stream.frontend(ids, {"noise_scale": 0.0, "noise_w_scale": 0.0})
frames = seam[0].shape[2]
audio = {}
for threads in (0, 1):
    pw._local.threads = threads
    audio[threads] = stream.decode(seam, 0, frames)
pw._local.threads = 0
assert np.max(np.abs(audio[0] - audio[1])) < 1e-5, np.max(np.abs(audio[0] - audio[1]))
c = engine.stream.calibration
assert 0 < c.left < 32 and 0 < c.flow and 0 < c.flow_share < 0.5, c.as_dict()
for phonemes in engine.voice.phonemize("Hello there."):
    assert any(kind == "audio" for kind, _ in engine.stream.synthesize(phonemes, {}))
print("ok")
"#;
    assert_prints_ok(engine_script(script));
}

/// The next sentence's frontend is made ahead on a decoder thread: beside
/// this sentence's own frontend when that one was not made ahead (both run
/// at once), else among this sentence's chunks decoded side by side (it
/// begins before the last of them is out). It is taken by the request that
/// brings it, and it is the frontend that request would have made: the
/// same audio (noise at 0), one frontend run fewer on its path. One made
/// for other options is not taken. Real voice, real split graph.
#[test]
fn the_next_frontend_is_made_beside_this_sentences_work_and_is_the_one_it_would_make() {
    let script = r#"
import sys, threading
sys.path.insert(0, sys.argv[1])
import piper_worker as pw
engine = pw.load_voice(sys.argv[2], sys.argv[2] + ".json")
stream = engine.stream
quiet = {"noise_scale": 0.0, "noise_w_scale": 0.0}
side = (2, {name: part.runner(1, None) for name, part in engine.parts.items()})
import time
calls, began, ended = [], [], []
made = stream.frontend
def counted(ids, options):
    calls.append(threading.current_thread().name)
    began.append(time.perf_counter())
    try:
        return made(ids, options)
    finally:
        ended.append((threading.current_thread().name, time.perf_counter()))
stream.frontend = counted
text = ("The long road north of the river was closed for the whole winter, and nobody drove it "
    "until the snow had melted from the hills and the farmers came back down to the valley.")
this = stream.sentences(text)[0]
following = "Then the spring came back."
def timed(phonemes, options, ahead=None):
    chunks, sent = [], []
    for kind, value in stream.synthesize(phonemes, options, first=False, side_by_side=side, ahead=ahead):
        if kind == "audio":
            chunks.append(value)
            sent.append(time.perf_counter())
    return chunks, sent
def say(phonemes, options, ahead=None):
    return timed(phonemes, options, ahead)[0]
job = stream.ahead(following, quiet)
assert 0 < job.seconds < 1, job.seconds
chunks, sent = timed(this, quiet, ahead=job)
assert len(chunks) >= 2, "decoded side by side"
# This one's frontend was not made ahead: the next one's ran beside it.
assert sorted(c.startswith("decode") for c in calls) == [False, True], calls
ends = dict(ended)
assert max(began) < min(ends.values()), "both frontends at once"
# Its phonemes too: the request finds them without espeak.
phonemized, phonemize = [], stream.voice.phonemize
stream.voice.phonemize = lambda text: phonemized.append(text) or phonemize(text)
found = stream.sentences(following)
assert phonemized == [] and found == [p for p in phonemize(following) if p], phonemized
ahead = b"".join(say(found[0], quiet))
assert len(calls) == 2, f"taken, not made again: {calls}"
again = b"".join(say(stream.sentences(following)[0], quiet))
assert len(calls) == 3 and phonemized == [following], (calls, phonemized)
assert ahead == again and len(ahead) > 0, "the same audio"
# Made ahead for one length scale, asked for with another: made again.
say(this, quiet, ahead=stream.ahead(following, dict(quiet, length_scale=1.3)))
assert len(calls) == 5, calls
slower = b"".join(say(stream.sentences(following)[0], quiet))
assert len(calls) == 6 and slower == again, calls
# Where a listener waits for this one's start, the next frontend is not
# made beside this one's.
calls.clear(), began.clear(), ended.clear()
for kind, _ in stream.synthesize(this, quiet, first=True, side_by_side=side,
                                 ahead=stream.ahead("Then the snow came back.", quiet)):
    pass
for _ in range(100):  # a job placed last may still be starting
    if len(ended) == 2:
        break
    time.sleep(0.05)
assert sorted(c.startswith("decode") for c in calls) == [False, True], calls
ends = dict(ended)
assert began[calls.index(next(c for c in calls if c.startswith("decode")))] > ends["MainThread"], "after it"
# This one's frontend made ahead: the next one's among its chunks.
stream.ahead(text, quiet).frontend()
calls.clear(), began.clear()
chunks, sent = timed(this, quiet, ahead=stream.ahead("Then the rain came back.", quiet))
assert len(chunks) >= 2 and len(calls) == 1 and calls[0].startswith("decode"), calls
assert began[0] < sent[-1], "among the chunks, not after them"
print("ok")
"#;
    assert_prints_ok(engine_script(script));
}

/// The next sentence's first frames are decoded ahead by its job, on a
/// decoder thread, once this sentence's last chunk has started: a short one
/// whole (AHEAD_WHOLE frames at most), a longer one its first half, and one
/// that nothing is known to follow its first half however short (AHEAD_SPLIT
/// frames or more). Its request sends that audio first, as a one-thread
/// decode of those frames makes it at the request's volume, and decodes
/// only the rest; a whole one it decodes not at all. Made for another
/// volume, the audio is not taken; without the decoder's runs only the
/// frontend is made ahead. Real voice, real split graph.
#[test]
fn the_next_sentences_first_frames_are_decoded_ahead_after_this_ones_last_chunk_starts() {
    let script = r#"
import sys, threading, time, math
sys.path.insert(0, sys.argv[1])
import piper_worker as pw
import stream_synth as ss
engine = pw.load_voice(sys.argv[2], sys.argv[2] + ".json")
stream = engine.stream
quiet = {"noise_scale": 0.0, "noise_w_scale": 0.0, "volume": 0.8}
runs = {name: part.runner(1, None) for name, part in engine.parts.items()}
side = (2, runs)
decodes = []
decode = stream.decode
def counted(seam, start, end, **kwargs):
    decodes.append((threading.current_thread().name, seam[0].shape[2], start, end, time.perf_counter()))
    return decode(seam, start, end, **kwargs)
stream.decode = counted
this = stream.sentences(
    "The long road north of the river was closed for the whole winter, and nobody drove it "
    "until the snow had melted from the hills and the farmers came back down to the valley.")[0]
def say(phonemes, options, ahead=None, side_by_side=side):
    out = []
    for kind, value in stream.synthesize(phonemes, options, first=False, side_by_side=side_by_side, ahead=ahead):
        if kind == "audio":
            out.append((value, time.perf_counter()))
    return out
def frames_of(text):
    ids = stream.voice.phonemes_to_ids(stream.sentences(text)[0])
    return stream.frontend(ids, quiet)[0][0].shape[2]
def one_thread(text, frames):
    ids = stream.voice.phonemes_to_ids(stream.sentences(text)[0])
    seam, _ = stream.frontend(ids, quiet)
    return stream._pcm(seam, 0, frames, stream._gain(quiet), runs)
cases = [
    ("Then it rained.", False, lambda f: f),
    ("Then it rained again.", True, lambda f: math.ceil(f / 2)),
    ("The farmers sold their sheep at the market in the town by the sea, and went home "
     "in the dark with the money.", False, lambda f: min(stream.parallel_chunk(2), math.ceil(f / 2))),
]
for following, last, expected in cases:
    frames = frames_of(following)
    n = expected(frames)
    if last:
        assert ss.AHEAD_SPLIT <= frames <= ss.AHEAD_WHOLE, frames
    elif n == frames:
        assert frames <= ss.AHEAD_WHOLE, frames
    else:
        assert frames > ss.AHEAD_WHOLE, frames
    decodes.clear()
    chunks = say(this, quiet, ahead=stream.ahead(following, quiet, side, last))
    assert len(chunks) >= 2, "decoded side by side"
    mine = [d for d in decodes if d[1] != frames]
    theirs = [d for d in decodes if d[1] == frames]
    assert len(mine) == len(chunks) and len(theirs) == 1, (following, decodes)
    name, _, start, end, began = theirs[0]
    assert name.startswith("decode") and (start, end) == (0, n), (following, theirs, n)
    assert began >= mine[-1][4], "after this sentence's last chunk has started"
    decodes.clear()
    heard = say(stream.sentences(following)[0], quiet)
    rest = [(start, end) for _, _, start, end, _ in decodes]
    assert heard[0][0] == one_thread(following, n), "sent first, as a one-thread decode makes it"
    if n == frames:
        assert rest == [] and len(heard) == 1, (following, rest)
    else:
        assert rest and rest[0][0] == n and rest[-1][1] == frames, (following, rest)
        assert all(a[1] == b[0] for a, b in zip(rest, rest[1:])), rest
    assert sum(len(v) for v, _ in heard) == frames * stream.hop * 2, following
following = "Then it rained."
# Another volume: not taken (made again, louder).
say(this, quiet, ahead=stream.ahead(following, quiet, side))
decodes.clear()
loud = say(stream.sentences(following)[0], dict(quiet, volume=1.0), side_by_side=None)
assert decodes and loud[0][0] != one_thread(following, frames_of(following)), decodes
# Without the decoder's runs, only its frontend is made ahead.
other = "Then the rain came back."
decodes.clear()
say(this, quiet, ahead=stream.ahead(other, quiet))
assert all(d[1] != frames_of(other) for d in decodes), decodes
decodes.clear()
say(stream.sentences(other)[0], quiet)
assert len(decodes) >= 1, "decoded by its own request"
print("ok")
"#;
    assert_prints_ok(engine_script(script));
}

/// A request's words are matched to its phonemes on the words thread while
/// its last sentence's chunks decode side by side, not after them, and they
/// are the words matched after the audio; a request whose sentences are
/// decoded on every core matches them at its end. Real voice.
#[test]
fn the_words_are_matched_while_the_last_sentence_decodes() {
    let script = r#"
import sys, time, onnxruntime
sys.path.insert(0, sys.argv[1])
import piper_worker as pw
engine = pw.load_voice(sys.argv[2], sys.argv[2] + ".json")
sent, matched = [], []
def send(kind, request_id, payload=b""):
    sent.append((kind, time.perf_counter(), payload))
pw.send = send
words_of = pw.words_of
def timed(voice, text, alignments):
    began = time.perf_counter()
    words = words_of(voice, text, alignments)
    matched.append((began, alignments))
    return words
pw.words_of = timed
text = ("The long road north of the river was closed for the whole winter. "
        "Nobody drove it until the snow had melted from the hills and the farmers came back.")
import json
words = {}
# Noise at 0: both requests have the same durations.
request = {"id": 7, "text": text, "noise_scale": 0.0, "noise_w_scale": 0.0}
for threads, beside in ((0, True), (1, False)):
    sent.clear(), matched.clear()
    pw.synthesize(engine, dict(request, threads=threads), onnxruntime.RunOptions())
    kinds = [kind for kind, _, _ in sent]
    assert kinds[-2:] == [pw.WORDS, pw.DONE] and kinds.count(pw.AUDIO) > 2, kinds
    last_audio = max(at for kind, at, _ in sent if kind == pw.AUDIO)
    assert len(matched) == 1, len(matched)
    # Beside the last sentence's chunks (every core: after them).
    assert (matched[0][0] < last_audio) == beside, (threads, matched[0][0], last_audio)
    words[threads] = json.loads(sent[-2][2])["words"]
assert len(words[0]) > 20 and words[0] == words[1], words
print("ok")
"#;
    assert_prints_ok(engine_script(script));
}

/// Calibration on the bundled voice, into a folder of its own: margins as
/// wide as the decoder reads and no wider (its vocoder reads 10 frames each
/// side, its flow about 32 in all: docs/engine-protocol.md), chunks at those
/// margins that join the whole decode within two 16-bit steps at every third
/// frame of a sentence calibration never saw, and no decode longer than a
/// reference piece (a whole decode grew the engine's memory for good).
#[test]
fn calibrated_margins_are_what_the_decoder_reads_and_chunks_at_them_join() {
    let script = r#"
import sys, tempfile
import numpy as np
sys.path.insert(0, sys.argv[1])
import piper_worker as pw
import split_graph as sg
import stream_synth as ss
model = sys.argv[2]
engine = pw.load_voice(model, model + ".json")
stream = engine.stream
widest = [0]
real = ss.StreamVoice.decode
def counted(self, seam, start, end, *rest, **named):
    widest[0] = max(widest[0], end - start)
    return real(self, seam, start, end, *rest, **named)
with tempfile.TemporaryDirectory(prefix="piperd-test-calibration-") as root:
    stream.cache = sg.Cache(root, sg.model_hash(model))
    ss.StreamVoice.decode = counted
    try:
        c = stream._calibrate()
    finally:
        ss.StreamVoice.decode = real
assert widest[0] <= ss.REFERENCE_PIECE, widest
assert 10 <= c.left == c.right <= 12, c.as_dict()
# The flow's reach: 18 + 4 + 10 here; a machine whose float rounding lets
# the sparse check pass a frame or two earlier is still within the join
# check below, which is what the audio needs.
assert 30 <= c.left + c.flow <= 36, c.as_dict()
text = "The lights in the kitchen stay on until the last train has left the station tonight."
ids = engine.voice.phonemes_to_ids(engine.voice.phonemize(text)[0])
seam, _ = stream.frontend(ids, {"noise_scale": 0.0, "noise_w_scale": 0.0})
frames = seam[0].shape[2]
whole = stream.decode(seam, 0, frames, 0, 0, 0)
step = 1.0 / (c.gain * ss.MAX_WAV_VALUE)
def worst_steps(margin, flow):
    """The farthest sample, in steps, of 8-frame chunks at every third frame."""
    worst = 0.0
    for a in range(0, frames - 8, 3):
        got = stream.decode(seam, a, a + 8, margin, margin, flow)
        worst = max(worst, float(np.max(np.abs(got - whole[a * 256 : (a + 8) * 256]))) / step)
    return worst
worst = worst_steps(c.left, c.flow)
assert worst <= 2.0, f"chunks at the calibrated margins are {worst:.2f} steps off"
# A vocoder margin of 9 frames (the flow's reach kept) is far off: the
# check above can tell a margin too narrow.
worst = worst_steps(9, c.left + c.flow - 9)
assert worst > 10.0, f"a vocoder margin of 9 frames is only {worst:.2f} steps off"
print("ok")
"#;
    assert_prints_ok(engine_script(script));
}

/// A decoder whose vocoder input is not found by its structure stays one
/// graph: the engine then decodes chunks of the whole decoder, with the
/// wider margins that the flow's reach needs, and they still join into the
/// whole decode. Real voice, split in a folder of its own.
#[test]
fn a_decoder_without_a_found_vocoder_input_stays_one_graph_with_wider_margins() {
    let script = r#"
import os, sys, tempfile
import numpy as np
sys.path.insert(0, sys.argv[1])
import split_graph as sg
model = sys.argv[2]
sg.find_vocoder_input = lambda graph, speaker: None
with tempfile.TemporaryDirectory(prefix="piperd-test-split-") as root:
    os.environ["PIPER_ENGINE_CACHE_DIR"] = root
    sg.Cache(root, sg.model_hash(model)).store_split(sg.split(model))
    import piper_worker as pw
    engine = pw.load_voice(model, model + ".json")
    assert list(engine.parts) == ["decoder"], list(engine.parts)
    c = engine.stream.calibration
    assert c.flow == 0 and c.left >= 24, c.as_dict()
    text = "The lights in the kitchen stay on until the last train has left the station tonight."
    phonemes = engine.voice.phonemize(text)[0]
    quiet = {"noise_scale": 0.0, "noise_w_scale": 0.0}
    frames = engine.stream.frontend(engine.voice.phonemes_to_ids(phonemes), quiet)[0][0].shape[2]
    assert len(engine.stream.plan(frames, True)) > 1, "cut in chunks"
    def audio(first):
        pcm = b"".join(v for k, v in engine.stream.synthesize(phonemes, quiet, first) if k == "audio")
        return np.frombuffer(pcm, dtype=np.int16).astype(np.int32)
    chunked, whole = audio(True), audio(False)
    assert len(chunked) == len(whole) and np.max(np.abs(chunked - whole)) <= 1
print("ok")
"#;
    // The script splits into a folder of its own (PIPER_ENGINE_CACHE_DIR).
    assert_prints_ok(engine_script(script));
}

/// The model's hash, which names its split graph's cache folder, is
/// remembered in the cache by the file's identity (device, inode, size,
/// modification time), so a start reads no model byte for it; a file
/// rewritten or an entry that is not a hash is hashed again, hard links share
/// one entry, and without a cache folder the hash is made every time.
#[test]
fn the_models_hash_is_remembered_by_the_files_identity_and_made_again_when_it_changes() {
    let script = r#"
import hashlib, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import split_graph as sg
with tempfile.TemporaryDirectory(prefix="piperd-test-hash-") as root:
    model = os.path.join(root, "voice.onnx")
    with open(model, "wb") as out:
        out.write(b"first voice" * 1000)
    cache = os.path.join(root, "cache")
    def truth():
        with open(model, "rb") as found:
            return hashlib.sha256(found.read()).hexdigest()
    assert sg.model_hash(model, cache) == truth()
    entries = os.listdir(os.path.join(cache, "hashes"))
    assert len(entries) == 1, entries
    entry = os.path.join(cache, "hashes", entries[0])
    # Remembered: what the entry says comes back, no model byte is read.
    with open(entry, "w") as planted:
        planted.write("a" * 64)
    assert sg.model_hash(model, cache) == "a" * 64
    os.link(model, model + ".link")
    assert sg.model_hash(model + ".link", cache) == "a" * 64, "a hard link shares it"
    # Rewritten in place, same size, one millisecond later: hashed again.
    stat = os.stat(model)
    with open(model, "r+b") as out:
        out.write(b"other voice" * 1000)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert os.stat(model).st_ino == stat.st_ino and os.stat(model).st_size == stat.st_size
    assert sg.model_hash(model, cache) == truth() != "a" * 64
    for name in os.listdir(os.path.join(cache, "hashes")):
        with open(os.path.join(cache, "hashes", name), "w") as broken:
            broken.write("not a hash")
    assert sg.model_hash(model, cache) == truth(), "a broken entry"
    assert sg.model_hash(model, "") == truth(), "no cache folder"
print("ok")
"#;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(python());
    command.arg("-c").arg(script).arg(root.join("engine"));
    assert_prints_ok(command);
}

/// A Python check of the engine's chunk plans: `body` runs after a prelude
/// that imports stream_synth as `ss` and defines `voice(calibration)`, a
/// `StreamVoice` with only that calibration (22,050 Hz, 256 samples a
/// frame), so plans are checked without a voice or a session.
fn plan_check(body: &str) -> Command {
    let prelude = r#"
import sys
sys.path.insert(0, sys.argv[1])
import stream_synth as ss

class Config:
    sample_rate = 22050

def voice(calibration):
    v = ss.StreamVoice.__new__(ss.StreamVoice)
    v.hop, v.config = 256, Config()
    v.calibration = calibration
    v.first_schedule = v.schedule(True)
    v._schedules = {1.0: v.first_schedule}
    return v
"#;
    let mut command = Command::new(python());
    command
        .arg("-c")
        .arg(format!("{prelude}{body}"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("engine"));
    command
}

/// A Python check run with the engine's folder and the bundled voice as its
/// arguments, and the split graph where piperd keeps it (made if missing).
fn engine_script(script: &str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(python());
    command
        .arg("-c")
        .arg(script)
        .arg(root.join("engine"))
        .arg(root.join("voices").join(format!("{VOICE}.onnx")))
        .env(
            "PIPER_ENGINE_CACHE_DIR",
            piperd::config::default_engine_cache_dir(),
        );
    command
}

/// Runs a Python check that prints "ok" when every assertion in it held.
fn assert_prints_ok(mut command: Command) {
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok"));
}
