/**
 * npm run bench:rope — the fused RoPE on a LLaMA-7B-shaped step (4096 tokens, 32 q heads, 32 or 8 kv
 * heads, head_dim 128) against the unfused reference and against a plain copy of the same bytes,
 * measured side by side in one run. Prints a markdown table.
 *
 *   --tokens N   tokens per step (default 4096)
 *   --runs N     timed runs of the fast paths, median reported (default 9)
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { type DType, roundTo } from '../src/core/dtype.js';
import { type Allocator, jsAllocator, Tensor } from '../src/core/tensor.js';
import { wasmAllocator } from '../src/kernels/wasm/allocator.js';
import { ropeReference } from '../src/ops/rope/reference.js';
import { Rope } from '../src/ops/rope/rope.js';
import { ropeScaling } from '../src/ops/rope/scaling.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '4096' }, runs: { type: 'string', default: '9' } } });
const TOKENS = Number(values.tokens);
const RUNS = Number(values.runs);
const HEAD_DIM = 128;
const Q_HEADS = 32;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function timeIt(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

function randomTensor(shape: number[], dtype: DType, alloc: Allocator, seed: number): Tensor {
  let s = seed;
  const t = Tensor.empty(shape, dtype, alloc);
  const v = new Float64Array(t.numel);
  for (let i = 0; i < v.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    v[i] = roundTo(dtype, (s / 2 ** 32) * 4 - 2);
  }
  return Tensor.fromValues(v, shape, dtype, alloc);
}

interface Row {
  what: string;
  seconds: number;
  elements: number;
  bytes: number;
}

const rows: string[] = [];
const rope = new Rope({ scaling: ropeScaling({ headDim: HEAD_DIM, base: 10000 }) });
const positions = Int32Array.from({ length: TOKENS }, (_, t) => t);

for (const dtype of ['f16', 'f32'] as const) {
  for (const kvHeads of [32, 8]) {
    const qShape = [1, TOKENS, Q_HEADS, HEAD_DIM];
    const kShape = [1, TOKENS, kvHeads, HEAD_DIM];
    const q = randomTensor(qShape, dtype, wasmAllocator, 1);
    const k = randomTensor(kShape, dtype, wasmAllocator, 2);
    const elements = q.numel + k.numel;
    // Bytes moved by an in-place rotation or a copy: every element read once and written once.
    const bytes = 2 * elements * q.data.BYTES_PER_ELEMENT;
    const qCopy = Tensor.empty(qShape, dtype, wasmAllocator);
    const kCopy = Tensor.empty(kShape, dtype, wasmAllocator);
    const copy = () => {
      qCopy.data.set(q.data);
      kCopy.data.set(k.data);
    };
    const fused = () => rope.fused({ q, k, positions, layout: 'bshd' });
    // Warm up, then interleave the runs so that noise hits both alike.
    copy();
    fused();
    const copyTimes: number[] = [];
    const fusedTimes: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      copyTimes.push(timeIt(copy));
      fusedTimes.push(timeIt(fused));
    }
    // The strided TypeScript loop (what runs for tensors outside the wasm heap) and the reference.
    const qJs = randomTensor(qShape, dtype, jsAllocator, 1);
    const kJs = randomTensor(kShape, dtype, jsAllocator, 2);
    const strided = timeIt(() => rope.fused({ q: qJs, k: kJs, positions, layout: 'bshd' }));
    const reference = timeIt(() => ropeReference(rope, { q: qJs, k: kJs, positions, layout: 'bshd' }));
    const measured: Row[] = [
      { what: 'copy of the same bytes', seconds: median(copyTimes), elements, bytes },
      { what: 'fused (WASM SIMD, in place)', seconds: median(fusedTimes), elements, bytes },
      { what: 'fused (TypeScript strided loop)', seconds: strided, elements, bytes },
      { what: 'reference (unfused, textbook)', seconds: reference, elements, bytes },
    ];
    const copyRate = bytes / measured[0]!.seconds;
    const fusedTime = measured[1]!.seconds;
    for (const m of measured) {
      const rate = m.bytes / m.seconds;
      rows.push(
        `| ${dtype} | ${Q_HEADS}/${kvHeads} | ${m.what} | ${(m.seconds * 1e3).toFixed(2)} | ${((m.seconds / m.elements) * 1e9).toFixed(3)} | ${(rate / 1e9).toFixed(2)} | ${(rate / copyRate).toFixed(2)} | ${(m.seconds / fusedTime).toFixed(2)} |`,
      );
    }
  }
}

console.log(`RoPE step: ${TOKENS} tokens, head_dim ${HEAD_DIM}, positions 0..${TOKENS - 1}, median of ${RUNS} runs (reference and strided: 1 run)`);
console.log('');
console.log('| dtype | q/kv heads | path | ms | ns/element | GB/s | x copy bandwidth | time / fused |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
