import { test } from 'node:test';
import assert from 'node:assert/strict';
import { segmentSummary } from './analysis.js';
import { NumericsMonitor } from './monitor.js';
import { computeStats } from './stats.js';
import { FAKE_LAYER_PROBES, FAKE_SHAPE, defaultFakeValue, fakeForward, fakeRowShape } from './testing.js';
import type { LlamaProbeName, ProbeContext, ProbeStats } from './types.js';

const segmentsOf = (p: number) => (p < 3 ? 'text' : p < 5 ? 'image 0' : 'generated');

test('monitor: one record per (probe, layer) and forward, merged across prefill chunks, in execution order', () => {
  const mon = new NumericsMonitor();
  mon.beginForward('prefill');
  fakeForward(mon.probe, { start: 0, tokens: 5, chunk: 2, dtype: () => 'f16' });
  mon.beginForward('decode 0');
  fakeForward(mon.probe, { start: 5, tokens: 1 });
  const r = mon.report();
  assert.equal(r.forwards.length, 2);
  const [pre, dec] = r.forwards as [(typeof r.forwards)[0], (typeof r.forwards)[0]];
  assert.equal(pre.label, 'prefill');
  assert.deepEqual([pre.firstToken, pre.lastToken, dec.firstToken, dec.lastToken], [0, 4, 5, 5]);
  const want = ['embeddings@-1', ...[0, 1].flatMap((l) => FAKE_LAYER_PROBES.map((p) => `${p}@${l}`)), 'final_norm@-1', 'logits@-1'];
  assert.deepEqual(pre.probes.map((p) => `${p.probe}@${p.layer}`), want);
  assert.deepEqual(dec.probes.map((p) => `${p.probe}@${p.layer}`), want);
  for (let i = 1; i < pre.probes.length; i++) assert.ok(pre.probes[i]!.seq > pre.probes[i - 1]!.seq);

  // down@1 of the prefill: 3 chunks merged equal the stats of all 5 rows at once.
  const down = pre.probes.find((p) => p.probe === 'down' && p.layer === 1)!;
  const rowLen = FAKE_SHAPE.dim;
  const all = Float32Array.from({ length: 5 * rowLen }, (_, i) => defaultFakeValue('down', 1, Math.floor(i / rowLen), i % rowLen));
  const whole = computeStats(all, [5, rowLen], { dtype: 'f16', probe: 'down', layer: 1 });
  assert.equal(down.calls, 3);
  assert.equal(down.tokens, 5);
  assert.equal(down.dtype, 'f16');
  assert.deepEqual(down.absmaxAt, whole.absmaxAt);
  assert.equal(down.absmax, whole.absmax);
  assert.ok(Math.abs(down.mean - whole.mean) < 1e-12);
  assert.equal(down.forward, 0);
  // The head ran once, on the last token.
  const logits = pre.probes.find((p) => p.probe === 'logits')!;
  assert.deepEqual([logits.calls, logits.tokens, logits.firstToken], [1, 1, 4]);
  // q is [tokens, heads, headDim]: the location has a head.
  const q = dec.probes.find((p) => p.probe === 'q' && p.layer === 0)!;
  assert.notEqual(q.absmaxAt!.head, null);
  assert.equal(q.absmaxAt!.token, 5);
});

test('monitor: stats split by segment; a failure confined to image tokens shows as such', () => {
  const mon = new NumericsMonitor({ segments: segmentsOf });
  // Image tokens (3, 4) blow up in down of layer 1 and everything after it.
  const value = (name: LlamaProbeName, layer: number, token: number, i: number) => {
    const bad = token >= 3 && token < 5 && ((name === 'down' && layer === 1) || name === 'residual_2' && layer === 1 || name === 'final_norm' || name === 'logits');
    return bad && i === 2 ? Infinity : defaultFakeValue(name, layer, token, i);
  };
  mon.beginForward('prefill');
  fakeForward(mon.probe, { start: 0, tokens: 5, chunk: 4, value, allLogits: true });
  mon.beginForward('decode');
  fakeForward(mon.probe, { start: 5, tokens: 1, value });
  const r = mon.report();
  assert.deepEqual(r.segmentNames, ['text', 'image 0', 'generated']);
  const seg = (fw: number, probe: string, layer: number, s: string) => r.forwards[fw]!.segments.find((x) => x.probe === probe && x.layer === layer && x.segment === s);
  // Chunk 0 holds tokens 0-3 (text 0-2 and image 3), chunk 1 token 4 (image).
  const imgDown = seg(0, 'down', 1, 'image 0')!;
  assert.equal(imgDown.tokens, 2);
  assert.equal(imgDown.posInf, 2);
  assert.deepEqual([imgDown.firstToken, imgDown.lastToken], [3, 4]);
  assert.equal(imgDown.firstNonFinite!.token, 3);
  const textDown = seg(0, 'down', 1, 'text')!;
  assert.equal(textDown.tokens, 3);
  assert.equal(textDown.nonFinite, 0);
  assert.equal(seg(0, 'down', 1, 'generated'), undefined);
  assert.equal(seg(1, 'down', 1, 'generated')!.tokens, 1);
  // Totals agree with the segments.
  const total = r.forwards[0]!.probes.find((p) => p.probe === 'down' && p.layer === 1)!;
  assert.equal(total.posInf, imgDown.posInf + textDown.posInf);
  assert.equal(total.tokens, 5);

  const summary = segmentSummary(r);
  const bySeg = Object.fromEntries(summary.map((s) => [s.segment, s]));
  assert.equal(bySeg['text']!.nonFinite, 0);
  assert.equal(bySeg['text']!.tokens, 3);
  assert.equal(bySeg['image 0']!.tokens, 2);
  assert.ok(bySeg['image 0']!.nonFinite >= 4);
  assert.deepEqual(bySeg['image 0']!.firstNonFinite, { probe: 'down', layer: 1, forward: 0, token: 3 });
  assert.equal(bySeg['image 0']!.worstHeadroomBits, -Infinity);
  assert.ok(bySeg['text']!.worstHeadroomBits > 0);
  assert.equal(r.firstNonFinite!.segment, 'image 0');
});

test('monitor: many forwards (the record store grows): segment records stay equal to the totals they split', () => {
  // Prompt lengths of either parity, so that growing the store hits both kinds of record.
  for (const promptLength of [2, 3, 4, 5]) {
    const mon = new NumericsMonitor({ segments: segmentsOf });
    mon.beginForward('prefill');
    fakeForward(mon.probe, { start: 0, tokens: promptLength, chunk: 2 });
    for (let s = 0; s < 40; s++) {
      mon.beginForward(`decode ${s}`);
      fakeForward(mon.probe, { start: promptLength + s, tokens: 1 });
    }
    const r = mon.report();
    assert.equal(r.forwards.length, 41);
    for (const fw of r.forwards) {
      for (const p of fw.probes) {
        const parts = fw.segments.filter((s) => s.probe === p.probe && s.layer === p.layer);
        assert.equal(parts.reduce((n, s) => n + s.count, 0), p.count, `prompt ${promptLength}, forward ${fw.index} ${p.probe}@${p.layer}`);
        assert.equal(Math.max(...parts.map((s) => s.absmax)), p.absmax);
        if (parts.length === 1) assert.deepEqual({ ...parts[0]!, segment: null }, p);
      }
    }
  }
});

test('monitor: per-channel absmax of the residual stream (embeddings and residual_2) across layers and forwards', () => {
  const mon = new NumericsMonitor({ residualChannels: true });
  const value = (name: LlamaProbeName, layer: number, token: number, i: number) => {
    if (name === 'residual_2' && layer === 1 && i === 5) return token === 2 ? -3000 : 100;
    if (name === 'residual_2' && layer === 0 && i === 5 && token === 6) return 50; // in the decode forward
    return defaultFakeValue(name, layer, token, i);
  };
  fakeForward(mon.probe, { start: 0, tokens: 4, chunk: 3, value });
  mon.beginForward();
  fakeForward(mon.probe, { start: 6, tokens: 1, value });
  const r = mon.report();
  const res = r.residual!;
  assert.equal(res.dim, FAKE_SHAPE.dim);
  assert.deepEqual(res.layers.map((l) => l.layer), [-1, 0, 1]);
  const l1 = res.layers[2]!;
  assert.equal(l1.absmax[5], 3000);
  assert.equal(l1.token[5], 2);
  assert.equal(l1.forward[5], 0);
  const l0 = res.layers[1]!;
  assert.equal(l0.absmax[5], 50);
  assert.deepEqual([l0.token[5], l0.forward[5]], [6, 1]);
  // Every channel: the max over the 5 tokens of |value|.
  for (let c = 0; c < FAKE_SHAPE.dim; c++) {
    const want = Math.max(...[0, 1, 2, 3, 6].map((t) => Math.abs(Math.fround(value('embeddings', -1, t, c)))));
    assert.equal(res.layers[0]!.absmax[c], want, `embeddings channel ${c}`);
  }
  assert.equal(new NumericsMonitor().report().residual, null);
});

test('monitor: onStats gets every call; without a ProbeContext positions are counted and values taken as f32', () => {
  const seen: ProbeStats[] = [];
  const mon = new NumericsMonitor({ onStats: (s) => seen.push(s) });
  mon.beginForward();
  fakeForward(mon.probe, { start: 0, tokens: 5, chunk: 2, noContext: true });
  mon.beginForward();
  fakeForward(mon.probe, { start: 5, tokens: 1, noContext: true });
  const perChunk = 1 + 2 * FAKE_LAYER_PROBES.length;
  assert.equal(seen.length, 3 * perChunk + 2 + perChunk + 2);
  assert.deepEqual(
    seen.filter((s) => s.probe === 'embeddings').map((s) => [s.forward, s.firstToken, s.tokens]),
    [
      [0, 0, 2],
      [0, 2, 2],
      [0, 4, 1],
      [1, 5, 1],
    ],
  );
  assert.deepEqual(seen.filter((s) => s.probe === 'logits').map((s) => s.firstToken), [4, 5]);
  assert.ok(seen.every((s) => s.dtype === 'f32' && s.calls === 1 && s.segment === null));
  const r = mon.report();
  assert.deepEqual([r.forwards[1]!.firstToken, r.forwards[1]!.lastToken], [5, 5]);
  // A probe call with no open forward opens one.
  const m2 = new NumericsMonitor();
  fakeForward(m2.probe, { start: 0, tokens: 1 });
  assert.equal(m2.report().forwards.length, 1);
  assert.throws(() => m2.probe('nope' as LlamaProbeName, 0, new Float32Array(1), [1, 1]), /unknown probe/);
});

test('monitor: keepData copies the values (not views of the scratch) up to maxDataBytes', () => {
  const mon = new NumericsMonitor({ keepData: true });
  const scratch = new Float32Array(16);
  const ctx: ProbeContext = { dtype: 'f32', firstToken: 0, overflowed: 0, clamped: 0 };
  scratch.fill(1);
  mon.probe('embeddings', -1, scratch.subarray(0, 8), [2, 4], ctx);
  scratch.fill(2); // the model overwrites its scratch
  mon.probe('attn_norm', 0, scratch.subarray(0, 8), [2, 4], ctx);
  const r = mon.report();
  const d = r.forwards[0]!.data;
  assert.deepEqual(d.map((x) => [x.probe, x.layer, x.rowLength, x.chunks[0]!.values[0]]), [
    ['embeddings', -1, 4, 1],
    ['attn_norm', 0, 4, 2],
  ]);
  assert.equal(r.keptBytes, 64);
  assert.equal(r.dataTruncated, false);

  const small = new NumericsMonitor({ keepData: true, maxDataBytes: 40 });
  small.probe('embeddings', -1, scratch.subarray(0, 8), [2, 4], ctx);
  small.probe('attn_norm', 0, scratch.subarray(0, 8), [2, 4], ctx);
  const s = small.report();
  assert.equal(s.keptBytes, 32);
  assert.equal(s.dataTruncated, true);
  assert.equal(s.forwards[0]!.data.length, 1);
  assert.equal(new NumericsMonitor().report().keptBytes, 0);
  assert.equal(new NumericsMonitor().report().forwards.length, 0);
  // reset forgets everything
  mon.reset();
  assert.equal(mon.report().forwards.length, 0);
  assert.equal(mon.report().keptBytes, 0);
});

test('monitor: fake shapes match the model (q and k carry heads)', () => {
  assert.deepEqual(fakeRowShape('q', FAKE_SHAPE), [FAKE_SHAPE.heads, FAKE_SHAPE.headDim]);
  assert.deepEqual(fakeRowShape('attn_out', FAKE_SHAPE), [FAKE_SHAPE.heads * FAKE_SHAPE.headDim]);
});

// ---- cost ----------------------------------------------------------------------------------------


