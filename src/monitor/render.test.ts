import { test } from 'node:test';
import assert from 'node:assert/strict';
import { roundTo } from '../core/dtype.js';
import { analyze } from './analysis.js';
import { LAYER_PROBES } from './graph.js';
import { NumericsMonitor, type NumericsMonitorOptions } from './monitor.js';
import { fromJsonNumber, jsonNumber, renderHtml, renderTerminalSummary, traceJson } from './render.js';
import { TRACE_SCHEMA_ID, TRACE_SCHEMA_VERSION, validateTraceJson } from './schema.js';
import { FAKE_SHAPE, defaultFakeValue, fakeForward } from './testing.js';
import type { LlamaProbeName, TraceReport } from './types.js';

const SHAPE = { ...FAKE_SHAPE, layers: 3, dim: 32 };
const segments = (p: number) => (p < 2 ? 'text <b>&' : p < 5 ? 'image 0' : 'generated');

/** Residual channel 5 is massive from layer 1; `fail`: down of layer 0 overflows at token 3, then NaN spreads. */
function run(opts: { fail?: boolean; noise?: number; monitor?: NumericsMonitorOptions } = {}): TraceReport {
  const mon = new NumericsMonitor({ segments, residualChannels: true, keepData: true, ...opts.monitor });
  const rank = (n: LlamaProbeName, l: number) => (n === 'embeddings' ? -1 : n === 'final_norm' || n === 'logits' ? 1e6 : l * 100 + LAYER_PROBES.indexOf(n));
  const DOWN = LAYER_PROBES.indexOf('down');
  const ATTN = LAYER_PROBES.indexOf('attn_out');
  const value = (n: LlamaProbeName, l: number, t: number, i: number) => {
    if (opts.fail) {
      if (n === 'down' && l === 0 && t === 3 && i === 3) return Infinity;
      if ((t === 3 && rank(n, l) > DOWN) || (t > 3 && rank(n, l) >= 100 + ATTN)) return NaN;
    }
    if (n === 'residual_2' && l >= 1 && i === 5 && t === 0) return 3000 * l;
    return defaultFakeValue(n, l, t, i) * (1 + (opts.noise ?? 0) * (i % 2 ? 1 : -1));
  };
  const overflowed = (n: LlamaProbeName, l: number, d: Float32Array) => (opts.fail && n === 'down' && l === 0 ? d.filter((x) => x === Infinity).length : 0);
  mon.beginForward('prefill');
  fakeForward(mon.probe, { shape: SHAPE, start: 0, tokens: 5, chunk: 2, dtype: () => 'f16', overflowed, value: (n, l, t, i) => roundTo('f16', value(n, l, t, i)) });
  for (let s = 0; s < 2; s++) {
    mon.beginForward(`decode ${s}`);
    fakeForward(mon.probe, { shape: SHAPE, start: 5 + s, tokens: 1, dtype: () => 'f16', overflowed, value: (n, l, t, i) => roundTo('f16', value(n, l, t, i)) });
  }
  return mon.report();
}

// ---- a minimal HTML checker ------------------------------------------------------------------------

const VOID = new Set(['area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr']);

interface Parsed {
  ids: string[];
  tags: Map<string, number>;
  attrs: { tag: string; name: string; value: string }[];
  text: string;
}

/** Parses the page's tags, checking they nest and close, that text has no raw '<', and that attributes are quoted. */
function parseHtml(html: string): Parsed {
  assert.match(html, /^<!DOCTYPE html>\s*<html[\s>]/i);
  let rest = html.replace(/^<!DOCTYPE html>/i, '');
  const stack: string[] = [];
  const out: Parsed = { ids: [], tags: new Map(), attrs: [], text: '' };
  const tagRe = /^<(\/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z_:][-a-zA-Z0-9_:.]*(?:="[^"<]*")?)*)\s*(\/?)>/;
  while (rest.length > 0) {
    const lt = rest.indexOf('<');
    const text = lt < 0 ? rest : rest.slice(0, lt);
    assert.ok(!/[<>]/.test(text), `raw angle bracket in text: ${text.slice(0, 60)}`);
    assert.ok(!/&(?!(amp|lt|gt|quot|#39|#\d+);)/.test(text), `unescaped & in text: ${text.slice(0, 60)}`);
    out.text += text;
    if (lt < 0) break;
    rest = rest.slice(lt);
    if (rest.startsWith('<!--')) {
      const end = rest.indexOf('-->');
      assert.ok(end > 0, 'unterminated comment');
      rest = rest.slice(end + 3);
      continue;
    }
    const m = tagRe.exec(rest);
    assert.ok(m, `malformed tag at: ${rest.slice(0, 80)}`);
    const [whole, close, rawName, attrText, selfClose] = m;
    const name = rawName!.toLowerCase();
    rest = rest.slice(whole.length);
    if (close) {
      assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
      continue;
    }
    out.tags.set(name, (out.tags.get(name) ?? 0) + 1);
    for (const a of attrText!.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:="([^"]*)")?/g)) {
      out.attrs.push({ tag: name, name: a[1]!.toLowerCase(), value: a[2] ?? '' });
      if (a[1] === 'id') out.ids.push(a[2]!);
    }
    if (name === 'style' || name === 'script') {
      const end = rest.indexOf(`</${name}>`);
      assert.ok(end >= 0, `unterminated <${name}>`);
      rest = rest.slice(end + name.length + 3);
      continue;
    }
    if (!selfClose && !VOID.has(name)) stack.push(name);
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  return out;
}

function checkSelfContained(p: Parsed, html: string): void {
  assert.equal(p.tags.get('script'), undefined, 'no scripts');
  for (const a of p.attrs) {
    assert.notEqual(a.name, 'src', `<${a.tag} src=...>`);
    if (a.name === 'href') assert.ok(a.value.startsWith('#') || a.value.startsWith('data:'), `external href ${a.value}`);
    if (a.name === 'href' && a.value.startsWith('#')) assert.ok(p.ids.includes(a.value.slice(1)), `dangling link ${a.value}`);
  }
  assert.ok(!/https?:\/\//.test(html), 'no URLs');
  assert.ok(!/url\(/.test(html), 'no CSS urls');
  assert.ok(!/@import/.test(html), 'no CSS imports');
  assert.equal(new Set(p.ids).size, p.ids.length, 'ids are unique');
  assert.equal(p.ids.filter((id) => id === 'first-bad-op').length, 1);
}

test('checker: rejects what it should', () => {
  assert.throws(() => parseHtml('<!DOCTYPE html><html><body><div></body></html>'));
  assert.throws(() => parseHtml('<!DOCTYPE html><html><body>a < b</body></html>'));
  assert.throws(() => parseHtml('<!DOCTYPE html><html><body><p class=x>a</p></body></html>'));
  assert.throws(() => checkSelfContained(parseHtml('<!DOCTYPE html><html><body><img src="x.png"><p id="first-bad-op"></p></body></html>'), ''));
  assert.throws(() => checkSelfContained(parseHtml('<!DOCTYPE html><html><body><p id="a"></p></body></html>'), ''));
});

test('renderHtml: a well-formed self-contained page; first bad op, heatmaps, residual channels, shadow', () => {
  const shadow = run({ fail: false });
  const report = run({ fail: true, noise: 1e-3 });
  const analyses = analyze(report, { shadow });
  const html = renderHtml(report, analyses, { title: 'trace <of> "tiny" & co' });
  const p = parseHtml(html);
  checkSelfContained(p, html);
  for (const id of ['first-bad-op', 'probes', 'headroom', 'segments', 'residual', 'shadow']) assert.ok(p.ids.includes(id), id);
  assert.ok((p.tags.get('svg') ?? 0) >= 4, 'absmax, headroom, residual and shadow charts');
  assert.ok((p.tags.get('rect') ?? 0) > 100);
  assert.match(html, /<title>trace &lt;of&gt; &quot;tiny&quot; &amp; co<\/title>/);
  assert.match(html, /text &lt;b&gt;&amp;/, 'segment names are escaped');
  const section = html.slice(html.indexOf('id="first-bad-op"'), html.indexOf('</section>', html.indexOf('id="first-bad-op"')));
  assert.match(section, /class="card bad"/);
  assert.match(section, /down \(layer 0\) — forward 0 \(prefill\), token 3 \[image 0\], channel 3: inf/);
  assert.match(section, /precision-overflow/);
  assert.match(section, /act \(layer 0\)/, 'the input op is listed');
  assert.match(html, /First divergence: /);

  // A clean run says so, and a run without residual tracking or a shadow has no such sections.
  const clean = run({ monitor: { residualChannels: false, segments: undefined } });
  const cleanHtml = renderHtml(clean, analyze(clean));
  const c = parseHtml(cleanHtml);
  checkSelfContained(c, cleanHtml);
  assert.match(cleanHtml, /id="first-bad-op" class="card"><h2>First bad op<\/h2><p class="big">All finite/);
  for (const id of ['residual', 'shadow', 'segments']) assert.ok(!c.ids.includes(id), id);
  // An empty report renders too.
  const empty = new NumericsMonitor().report();
  const emptyHtml = renderHtml(empty, analyze(empty));
  checkSelfContained(parseHtml(emptyHtml), emptyHtml);
});

test('renderHtml: wide residual streams are binned to at most 512 columns', () => {
  const mon = new NumericsMonitor({ residualChannels: true });
  fakeForward(mon.probe, { shape: { ...FAKE_SHAPE, layers: 1, dim: 4096 }, start: 0, tokens: 1, value: (n, l, t, i) => (i === 1415 ? 2800 : defaultFakeValue(n, l, t, i)) });
  const r = mon.report();
  const html = renderHtml(r, analyze(r));
  checkSelfContained(parseHtml(html), html);
  const residual = html.slice(html.indexOf('id="residual"'));
  const rects = residual.slice(0, residual.indexOf('</svg>')).match(/<rect /g)!.length;
  assert.equal(rects, 2 * 512);
  assert.match(html, /Each column is the max over 8 adjacent channels/);
  assert.match(html, /channels 1408-1415 \(max at 1415\): absmax 2800/);
});

test('renderTerminalSummary: first bad op or all finite, worst headroom per layer, segments, massive channels, shadow', () => {
  const report = run({ fail: true });
  const text = renderTerminalSummary(report, analyze(report, { shadow: run() }));
  assert.match(text, /^numerics trace: 3 forward\(s\), 3 layer\(s\), dtype f16, segments text <b>&, image 0, generated$/m);
  assert.match(text, /^first bad op: down \(layer 0\), forward 0 'prefill', token 3 \[image 0\], channel 3: inf$/m);
  assert.match(text, /^ {2}triage: precision-overflow$/m);
  assert.match(text, /^ {2}precision overflow at down \(layer 0\).*f32 absmax >= 65520/m);
  assert.match(text, /^ {2}input act \(layer 0\): absmax /m);
  assert.match(text, /^worst headroom per layer/m);
  for (const l of ['-', '0', '1', '2']) assert.match(text, new RegExp(`^ {2}${l} +\\w+ `, 'm'), `layer ${l}`);
  assert.match(text, /^ {2}0 +down +inf +3 +overflow \(f16\)$/m);
  assert.match(text, /^ {2}image 0 +3 +\d+ +down \(layer 0\), token 3/m);
  assert.match(text, /^ {2}text <b>& +2 +0 +- /m);
  assert.match(text, /^massive channels/m);
  assert.match(text, /^ {2}5 +1 +3000 +6000 +2 +2$/m);
  assert.match(text, /^shadow: first divergence at /m);

  assert.match(text, /^rounding to the policy's dtypes: 1 value\(s\) overflowed to inf, 0 clamped$/m);

  const clean = run({ monitor: { residualChannels: false } });
  const cleanText = renderTerminalSummary(clean, analyze(clean));
  assert.match(cleanText, /^first bad op: none, all finite$/m);
  assert.ok(!/massive|shadow|rounding/.test(cleanText));
});

test('render: an all-finite run where the policy clamped says so (terminal, HTML, JSON)', () => {
  const mon = new NumericsMonitor();
  mon.beginForward('prefill');
  mon.probe('embeddings', -1, Float32Array.from([1, 2]), [1, 2], { dtype: 'f16', firstToken: 0, overflowed: 0, clamped: 0 });
  mon.probe('down', 0, Float32Array.from([65504, 2]), [1, 2], { dtype: 'f16', firstToken: 0, overflowed: 0, clamped: 1 });
  const r = mon.report();
  const a = analyze(r);
  assert.deepEqual(a.rounding, { overflowed: 0, clamped: 1, firstClamped: { probe: 'down', layer: 0, forward: 0 } });
  assert.match(renderTerminalSummary(r, a), /^first bad op: none, all finite\nrounding to the policy's dtypes: 0 value\(s\) overflowed to inf, 1 clamped, first at down \(layer 0\) in forward 0$/m);
  const html = renderHtml(r, a);
  checkSelfContained(parseHtml(html), html);
  assert.match(html, /All finite: no probe saw a NaN or an infinity\.<\/p><p>rounding to the policy&#39;s dtypes: 0 value\(s\) overflowed to inf, 1 clamped/);
  const j = JSON.parse(JSON.stringify(traceJson(r, a)));
  assert.deepEqual(validateTraceJson(j), []);
  assert.equal(j.rounding.clamped, 1);
  // The clamped value sits at the max: zero headroom, counted near the max.
  assert.equal(r.forwards[0]!.probes[1]!.headroomBits, 0);
  assert.equal(r.forwards[0]!.probes[1]!.nearMax, 1);
});

test('traceJson: validates against the schema; non-finite numbers as strings survive JSON', () => {
  const report = run({ fail: true });
  const analyses = analyze(report, { shadow: run() });
  const obj = traceJson(report, analyses);
  const parsed = JSON.parse(JSON.stringify(obj)) as ReturnType<typeof traceJson>;
  assert.deepEqual(validateTraceJson(parsed), []);
  assert.equal(parsed.schema, TRACE_SCHEMA_ID);
  assert.equal(parsed.version, TRACE_SCHEMA_VERSION);
  assert.equal(parsed.summary.allFinite, false);
  assert.deepEqual(parsed.summary.dtypes, ['f16']);
  assert.equal(parsed.forwards.length, 3);
  assert.equal(parsed.firstBadOp!.probe, 'down');
  assert.equal(parsed.firstBadOp!.value, 'Infinity');
  assert.equal(parsed.firstBadOp!.triage, 'precision-overflow');
  assert.deepEqual(parsed, obj, 'nothing is lost through JSON');
  const down = parsed.forwards[0]!.probes.find((p) => p.probe === 'down' && p.layer === 0)!;
  assert.equal(down.headroomBits, '-Infinity');
  assert.equal(fromJsonNumber(down.absmax), Infinity);
  assert.ok(parsed.forwards[0]!.segments.some((s) => s.segment === 'image 0'));
  assert.equal(parsed.residual!.layers.length, 4);
  assert.equal(parsed.residual!.layers[0]!.absmax.length, SHAPE.dim);
  assert.equal(parsed.massiveChannels!.channels[0]!.channel, 5);
  assert.ok(parsed.shadow!.entries.length > 0);
  for (const x of [NaN, Infinity, -Infinity, 0, -1.5]) assert.ok(Object.is(fromJsonNumber(jsonNumber(x)), x));

  // The validator catches a missing field, an extra field, a bare null where a number belongs
  // (what JSON.stringify makes of NaN), a wrong enum value and a wrong version.
  const mutate = (f: (t: any) => void) => {
    const t = JSON.parse(JSON.stringify(obj));
    f(t);
    return validateTraceJson(t);
  };
  assert.match(mutate((t) => delete t.forwards[0].probes[0].nan).join('\n'), /\$\.forwards\[0\]\.probes\[0\]\.nan: missing/);
  assert.match(mutate((t) => (t.forwards[1].extra = 1)).join('\n'), /\$\.forwards\[1\]\.extra: not in the schema/);
  assert.match(mutate((t) => (t.forwards[0].probes[2].mean = null)).join('\n'), /mean: expected a JsonNumber, got null/);
  assert.match(mutate((t) => (t.firstBadOp.triage = 'weird')).join('\n'), /triage: expected one of/);
  assert.match(mutate((t) => (t.version = 1)).join('\n'), /\$\.version: expected 2/);
  assert.match(mutate((t) => (t.forwards[0].probes[0].count = 1.5)).join('\n'), /count: expected an integer/);
  assert.match(mutate((t) => (t.residual.layers[0].absmax[3] = 'inf')).join('\n'), /absmax\[3\]: expected a JsonNumber/);

  // A clean run without residual tracking or a shadow: the optional parts are null.
  const clean = run({ monitor: { residualChannels: false } });
  const cj = JSON.parse(JSON.stringify(traceJson(clean, analyze(clean))));
  assert.deepEqual(validateTraceJson(cj), []);
  assert.deepEqual([cj.residual, cj.firstBadOp, cj.massiveChannels, cj.shadow, cj.summary.allFinite], [null, null, null, null, true]);
});
