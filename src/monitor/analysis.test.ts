import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FORMATS, roundTo } from '../core/dtype.js';
import { compareShadow, firstBadOp, headroomByLayer, massiveChannels, median, overflowThreshold } from './analysis.js';
import { NumericsMonitor } from './monitor.js';
import { FAKE_SHAPE, defaultFakeValue, fakeForward } from './testing.js';
import type { LlamaProbeName, ProbeContext } from './types.js';

type Value = (name: LlamaProbeName, layer: number, token: number, i: number) => number;

/**
 * A prefill (5 tokens, chunks of 2) and two decode steps of a 2-layer fake model stored in f16,
 * where from the op `bad` (at `layer`, token `token`, channel 3) onwards values turn non-finite:
 * `bad` itself gets +inf (or NaN), every later op of that token NaN, and later tokens NaN from
 * the first attention after `bad` on (propagation through the residual stream and the KV cache).
 */
function failingRun(bad: LlamaProbeName, badLayer: number, badToken: number, opts: { nan?: boolean; overflow?: boolean; big?: Value; monitor?: NumericsMonitor } = {}) {
  const order = (name: LlamaProbeName, layer: number) => {
    if (name === 'embeddings') return -1;
    if (name === 'final_norm' || name === 'logits') return 1e6 + (name === 'logits' ? 1 : 0);
    return layer * 100 + ['attn_norm', 'q', 'k', 'v', 'q_rope', 'k_rope', 'attn_out', 'o_proj', 'residual_1', 'mlp_norm', 'gate', 'up', 'act', 'down', 'residual_2'].indexOf(name);
  };
  const badAt = order(bad, badLayer);
  const attnAfter = [0, 1].map((l) => order('attn_out', l)).find((o) => o > badAt) ?? Infinity;
  const value: Value = (name, layer, token, i) => {
    const o = order(name, layer);
    if (token === badToken && o === badAt && i === 3) return opts.nan ? NaN : Infinity;
    if ((token === badToken && o > badAt) || (token > badToken && o >= attnAfter)) return NaN;
    return (opts.big ?? defaultFakeValue)(name, layer, token, i);
  };
  const mon = opts.monitor ?? new NumericsMonitor({ segments: (p) => (p < 2 ? 'text' : 'image 0') });
  const dtype = () => 'f16' as const;
  const overflowed = (name: LlamaProbeName, layer: number, data: Float32Array) =>
    opts.overflow && name === bad && layer === badLayer ? data.reduce((n, x) => n + (x === Infinity ? 1 : 0), 0) : 0;
  const run = (start: number, tokens: number, label: string) => {
    mon.beginForward(label);
    // Values are rounded to f16 as the model's policy would store them.
    fakeForward(mon.probe, { start, tokens, chunk: 2, dtype, overflowed, value: (n, l, t, i) => roundTo('f16', value(n, l, t, i)) });
  };
  run(0, 5, 'prefill');
  run(5, 1, 'decode 0');
  run(6, 1, 'decode 1');
  return mon.report();
}

test('firstBadOp: picks the op that creates the first non-finite value, not a later propagator', () => {
  // down of layer 0 at token 3 (second chunk of the prefill) overflows; residual_2, layer 1 and
  // the head of token 3 are NaN, and later tokens (and forwards) from attention in layer 1 on.
  const r = failingRun('down', 0, 3, { overflow: true });
  const b = firstBadOp(r)!;
  assert.ok(b);
  assert.equal(b.probe, 'down');
  assert.equal(b.layer, 0);
  assert.equal(b.forward, 0);
  assert.equal(b.forwardLabel, 'prefill');
  assert.equal(b.token, 3);
  assert.equal(b.segment, 'image 0');
  assert.equal(b.channel, 3);
  assert.equal(b.head, null);
  assert.equal(b.value, Infinity);
  // The stats are those of the creating call (the chunk of tokens 2-3), and its input is act of layer 1.
  assert.equal(b.stats.calls, 1);
  assert.deepEqual([b.stats.firstToken, b.stats.lastToken], [2, 3]);
  assert.equal(b.stats.posInf, 1);
  assert.deepEqual(b.inputs.map((s) => `${s.probe}@${s.layer}`), ['act@0']);
  assert.equal(b.inputs[0]!.nonFinite, 0);
  assert.deepEqual([b.inputs[0]!.firstToken, b.inputs[0]!.lastToken], [2, 3], 'the input stats come from the same chunk');
  // Later ops carry far more non-finite values: a "most non-finite" or "last" rule would pick them.
  const fw0 = r.forwards[0]!;
  const res2 = fw0.probes.find((p) => p.probe === 'residual_2' && p.layer === 1)!;
  assert.equal(fw0.probes.find((p) => p.probe === 'down' && p.layer === 0)!.nonFinite, 1);
  assert.ok(res2.nonFinite > b.stats.nonFinite);
  const late = ['attn_out', 'o_proj', 'residual_1', 'mlp_norm', 'gate', 'up', 'act', 'down', 'residual_2'];
  assert.ok(r.forwards[2]!.probes.filter((p) => p.layer === 1 && late.includes(p.probe)).every((p) => p.nonFinite === p.count), 'the last decode step is NaN from attention on');

  // Without the monitor's capture (a report put together by hand) the forward stats give the same op.
  const fb = firstBadOp({ ...r, firstNonFinite: null })!;
  assert.deepEqual([fb.probe, fb.layer, fb.forward, fb.token, fb.channel, fb.segment, fb.triage], ['down', 0, 0, 3, 3, 'image 0', 'precision-overflow']);
  assert.deepEqual(fb.inputs.map((s) => `${s.probe}@${s.layer}`), ['act@0']);

  // A q (3-d) creator in layer 0 of the first chunk: location with a head; inputs attn_norm.
  const q = firstBadOp(failingRun('q', 0, 1, { nan: true }))!;
  assert.equal(q.probe, 'q');
  assert.equal(q.token, 1);
  assert.equal(q.segment, 'text');
  assert.deepEqual([q.head, q.channel], [0, 3]);
  assert.deepEqual(q.inputs.map((s) => `${s.probe}@${s.layer}`), ['attn_norm@0']);
  // mlp_norm reads residual_1; residual_1 reads the incoming stream and o_proj; attn_norm@1 reads residual_2@0.
  assert.deepEqual(firstBadOp(failingRun('mlp_norm', 1, 0, { nan: true }))!.inputs.map((s) => `${s.probe}@${s.layer}`), ['residual_1@1']);
  assert.deepEqual(firstBadOp(failingRun('residual_1', 1, 0, { nan: true }))!.inputs.map((s) => `${s.probe}@${s.layer}`), ['residual_2@0', 'o_proj@1']);
  assert.deepEqual(firstBadOp(failingRun('final_norm', -1, 4, { nan: true }))!.inputs.map((s) => `${s.probe}@${s.layer}`), ['residual_2@1']);

  // All finite: null.
  const ok = new NumericsMonitor();
  fakeForward(ok.probe, { start: 0, tokens: 3 });
  assert.equal(firstBadOp(ok.report()), null);
});

test('firstBadOp: a creator in a decode step after a finite prefill', () => {
  const b = firstBadOp(failingRun('gate', 0, 5, { nan: true }))!;
  assert.deepEqual([b.probe, b.layer, b.forward, b.forwardLabel, b.token, b.segment], ['gate', 0, 1, 'decode 0', 5, 'image 0']);
});

test('firstBadOp: triage precision-overflow (finite in f32, inf in f16) vs semantic (non-finite even in f32)', () => {
  const over = firstBadOp(failingRun('down', 1, 3, { overflow: true }))!;
  assert.equal(over.triage, 'precision-overflow');
  assert.equal(over.f32AbsmaxSource, 'lower-bound');
  assert.equal(over.f32Absmax, overflowThreshold('f16'));
  assert.equal(overflowThreshold('f16'), 65520);
  assert.equal(roundTo('f16', 65520), Infinity);
  assert.equal(roundTo('f16', 65519.99), 65504);
  assert.match(over.message, /precision overflow at down \(layer 1\), token 3 \[image 0\], channel 3/);
  assert.match(over.message, /f32 absmax >= 65520/);

  // The model reports the pre-rounding absmax: the message says it.
  const mon = new NumericsMonitor();
  const ctx: ProbeContext = { dtype: 'f16', firstToken: 0, overflowed: 1, clamped: 0, f32Absmax: 71234.5 };
  mon.probe('down', 0, Float32Array.from([1, Infinity, -2, 3]), [1, 4], ctx);
  const m = firstBadOp(mon.report())!;
  assert.equal(m.triage, 'precision-overflow');
  assert.deepEqual([m.f32Absmax, m.f32AbsmaxSource], [71234.5, 'model']);
  assert.match(m.message, /\(f32 absmax 71230\) and became inf when rounded to f16 \(max 65504\)/);

  // A shadow run in f32 supplies it otherwise.
  const shadow = new NumericsMonitor();
  shadow.probe('down', 0, Float32Array.from([1, 90000, -2, 3]), [1, 4], { dtype: 'f32', firstToken: 0, overflowed: 0, clamped: 0 });
  const noCtx = new NumericsMonitor();
  noCtx.probe('down', 0, Float32Array.from([1, Infinity, -2, 3]), [1, 4], { dtype: 'f16', firstToken: 0, overflowed: 1, clamped: 0 });
  const s = firstBadOp(noCtx.report(), { shadow: shadow.report() })!;
  assert.deepEqual([s.f32Absmax, s.f32AbsmaxSource], [90000, 'shadow']);

  // NaN created from finite inputs with no rounding overflow: semantic.
  const sem = firstBadOp(failingRun('q', 0, 1, { nan: true }))!;
  assert.equal(sem.triage, 'semantic');
  assert.equal(sem.f32Absmax, null);
  assert.equal(sem.f32AbsmaxSource, null);
  assert.match(sem.message, /^semantic: q \(layer 0\) computed NaN at token 1 \[text\], head 0, channel 3 from finite inputs/);
  // An infinity without overflowed > 0 (e.g. inf weights) is semantic too.
  assert.equal(firstBadOp(failingRun('down', 1, 3))!.triage, 'semantic');
});

test('massiveChannels: channels far above the median per layer, first layer, near the dtype max', () => {
  const dim = 64;
  const shape = { ...FAKE_SHAPE, layers: 4, dim };
  const mon = new NumericsMonitor({ residualChannels: true });
  // Normal channels ~1; channel 7 massive from layer 1 (on token 0), channel 40 from layer 2,
  // growing to 20000 at layer 3 (> 65504 / 4 in f16); channel 9 only 50x the median.
  const value: Value = (name, layer, token, i) => {
    const base = 0.5 + 0.5 * Math.abs(Math.sin(i * 12.9898 + token * 78.233 + layer));
    if (name !== 'residual_2') return base;
    if (i === 7 && layer >= 1 && token === 0) return -2800;
    if (i === 40 && layer >= 2) return layer === 3 ? 20000 : 300;
    if (i === 9) return 50 * median(Array.from({ length: dim }, (_, c) => 0.5 + 0.5 * Math.abs(Math.sin(c * 12.9898 + token * 78.233 + layer))));
    return base;
  };
  fakeForward(mon.probe, { shape, start: 0, tokens: 3, dtype: () => 'f16', value });
  const r = mon.report();
  const mc = massiveChannels(r)!;
  assert.equal(mc.ratio, 100);
  assert.equal(mc.dtype, 'f16');
  assert.deepEqual(mc.layers.map((l) => l.layer), [-1, 0, 1, 2, 3]);
  assert.deepEqual(mc.layers.map((l) => l.channels.map((c) => c.channel)), [[], [], [7], [7, 40], [7, 40]]);
  const l1 = mc.layers[2]!;
  assert.equal(l1.channels[0]!.absmax, 2800);
  assert.equal(l1.channels[0]!.token, 0);
  assert.ok(l1.channels[0]!.ratio > 1000);
  assert.deepEqual(
    mc.channels.map((c) => [c.channel, c.firstLayer, c.firstAbsmax, c.peak, c.peakLayer, c.layers, c.nearMax]),
    [
      [7, 1, 2800, 2800, 1, 3, false],
      [40, 2, 300, 20000, 3, 2, true],
    ],
  );
  assert.equal(mc.nearMax, true);
  assert.equal(mc.nearMaxThreshold, FORMATS.f16.max / 4);
  // A lower ratio also catches channel 9; a higher one only the largest.
  assert.ok(massiveChannels(r, { ratio: 20 })!.channels.some((c) => c.channel === 9));
  assert.deepEqual(massiveChannels(r, { ratio: 5000 })!.channels.map((c) => c.channel), [40]);
  // In bf16 terms 20000 is nowhere near the max.
  assert.equal(massiveChannels(r, { dtype: 'bf16' })!.nearMax, false);
  assert.equal(massiveChannels(new NumericsMonitor().report()), null);
});

test('compareShadow: relative error and cosine per probe, first divergence, non-finite counts as divergence', () => {
  const keep = () => new NumericsMonitor({ keepData: true });
  // The main run: the shadow's values off by 1e-4 relative, except 'up' of layer 1 off by 5%
  // (and everything after it by 10%); chunked differently from the shadow.
  const main = keep();
  const shadow = keep();
  const noise = (name: LlamaProbeName, layer: number, token: number, i: number) => {
    const late = layer === 1 && ['up', 'act', 'down', 'residual_2'].includes(name);
    const off = name === 'up' && layer === 1 ? 0.05 : late || name === 'final_norm' || name === 'logits' ? 0.1 : 1e-4;
    return defaultFakeValue(name, layer, token, i) * (1 + off * (i % 2 === 0 ? 1 : -1));
  };
  fakeForward(main.probe, { start: 0, tokens: 4, chunk: 3, value: noise });
  fakeForward(shadow.probe, { start: 0, tokens: 4, chunk: 4 });
  const c = compareShadow(main.report(), shadow.report());
  assert.equal(c.threshold, 1e-2);
  assert.equal(c.missing, 0);
  assert.equal(c.entries.length, 1 + 2 * 15 + 2);
  const first = c.firstDivergence!;
  assert.deepEqual([first.probe, first.layer, first.forward], ['up', 1, 0]);
  assert.equal(first.tokens, 4);
  assert.ok(Math.abs(first.relError - 0.05) < 0.01, `rel ${first.relError}`);
  assert.ok(first.cosine > 0.99 && first.cosine < 1);
  const q = c.entries.find((e) => e.probe === 'q' && e.layer === 0)!;
  assert.ok(q.relError > 5e-5 && q.relError < 2e-4, `q rel ${q.relError}`);
  assert.ok(!q.diverged);
  assert.ok(Math.abs(q.cosine - 1) < 1e-6);
  // The head compared only the last token (present in both).
  assert.equal(c.entries.find((e) => e.probe === 'logits')!.tokens, 1);
  const l1 = c.byLayer.find((l) => l.layer === 1)!;
  assert.ok(l1.worstRelError > 0.09);

  // A non-finite value diverges even when everything else matches.
  const m2 = keep();
  const s2 = keep();
  fakeForward(m2.probe, { start: 0, tokens: 2, value: (n, l, t, i) => (n === 'k_rope' && l === 0 && t === 1 && i === 0 ? NaN : defaultFakeValue(n, l, t, i)) });
  fakeForward(s2.probe, { start: 0, tokens: 2 });
  const c2 = compareShadow(m2.report(), s2.report());
  assert.deepEqual([c2.firstDivergence!.probe, c2.firstDivergence!.layer, c2.firstDivergence!.nonFinite], ['k_rope', 0, 1]);
  assert.equal(c2.firstDivergence!.relError, Infinity);
  assert.equal(c2.entries.find((e) => e.probe === 'q_rope' && e.layer === 0)!.relError, 0);
  // Nothing diverges when the runs agree; a run without kept data has nothing to compare.
  assert.equal(compareShadow(s2.report(), s2.report()).firstDivergence, null);
  const bare = new NumericsMonitor();
  fakeForward(bare.probe, { start: 0, tokens: 2 });
  assert.equal(compareShadow(m2.report(), bare.report()).missing, 1 + 30 + 2);
});

test('headroomByLayer: least headroom over probes and forwards, per layer', () => {
  const mon = new NumericsMonitor();
  const value: Value = (name, layer, token, i) => (name === 'act' && layer === 1 && token === 2 && i === 0 ? 4096 : name === 'logits' && i === 1 ? 40 : 0.5);
  mon.beginForward();
  fakeForward(mon.probe, { start: 0, tokens: 2, dtype: () => 'f16', value });
  mon.beginForward();
  fakeForward(mon.probe, { start: 2, tokens: 1, dtype: () => 'f16', value });
  const h = headroomByLayer(mon.report());
  assert.deepEqual(h.map((x) => [x.layer, x.probe]), [
    [-1, 'logits'],
    [0, 'attn_norm'],
    [1, 'act'],
  ]);
  assert.equal(h[2]!.absmax, 4096);
  assert.equal(h[2]!.token, 2);
  assert.equal(h[2]!.headroomBits, Math.log2(65504 / 4096));
});
