/**
 * LLaVA-NeXT ("anyres") feature packing, following HF transformers' modeling_llava_next.py
 * (select_best_resolution, get_anyres_image_grid_shape, unpad_image, pack_image_features) and
 * processing_llava_next.py (_get_number_of_features):
 *
 *   - the image is resized to the best pinpoint resolution and cut into a (gh x gw) grid of
 *     image_size tiles; a base tile (the whole image at image_size) comes first;
 *   - every tile is encoded and projected to (side x side) rows of width dim;
 *   - the grid's rows are laid out as one (gh*side) x (gw*side) map, the padding the resize added
 *     is cut off (unpad), an image_newline row is appended after every map row, and the base
 *     tile's rows go first.
 */
import { fail } from '../../core/errors.js';

/** HF select_best_resolution: the pinpoint (height, width) keeping the most of the image, then wasting the least. */
export function selectBestResolution(height: number, width: number, pinpoints: ReadonlyArray<readonly [number, number]>): [number, number] {
  let best: [number, number] | undefined;
  let maxEffective = 0;
  let minWasted = Infinity;
  for (const [h, w] of pinpoints) {
    const scale = Math.min(w / width, h / height);
    const dw = Math.trunc(width * scale);
    const dh = Math.trunc(height * scale);
    const effective = Math.min(dw * dh, width * height);
    const wasted = w * h - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = [h, w];
    }
  }
  return best ?? fail('config', 'image_grid_pinpoints is empty');
}

/** Tiles per side: (rows, cols) of the anyres grid for an image of height x width. */
export function anyresGrid(height: number, width: number, pinpoints: ReadonlyArray<readonly [number, number]>, imageSize: number): [number, number] {
  const [h, w] = selectBestResolution(height, width, pinpoints);
  if (h % imageSize !== 0 || w % imageSize !== 0) fail('config', `image_grid_pinpoints entry [${h}, ${w}] is not a multiple of the image size ${imageSize}`);
  return [h / imageSize, w / imageSize];
}

/** Python's round(x, 7) then int(): the unpadded extent HF computes. */
function roundTo7(x: number): number {
  return Math.trunc(Number(x.toFixed(7)));
}

/** The kept (rows, cols) of a (current x current) feature map after unpad_image, and the offsets cut. */
export function unpaddedShape(height: number, width: number, curH: number, curW: number): { rows: number; cols: number; top: number; left: number } {
  const originalAspect = width / height;
  const currentAspect = curW / curH;
  if (originalAspect > currentAspect) {
    const newH = roundTo7(height * (curW / width));
    const pad = Math.floor((curH - newH) / 2);
    return { rows: curH - 2 * pad, cols: curW, top: pad, left: 0 };
  }
  const newW = roundTo7(width * (curH / height));
  const pad = Math.floor((curW - newW) / 2);
  return { rows: curH, cols: curW - 2 * pad, top: 0, left: pad };
}

export interface NextLayout {
  /** grid tiles (rows, cols), the base tile not included */
  grid: [number, number];
  /** patches per tile side */
  side: number;
  /** kept map after unpad */
  rows: number;
  cols: number;
  top: number;
  left: number;
  /** total feature rows: side^2 (base) + rows * (cols + 1) (map plus a newline per row) */
  featureRows: number;
}

/** How an image of height x width is laid out in feature rows (the 'default' strategy: no CLS). */
export function nextLayout(height: number, width: number, pinpoints: ReadonlyArray<readonly [number, number]>, imageSize: number, patchSize: number): NextLayout {
  const side = imageSize / patchSize;
  const grid = anyresGrid(height, width, pinpoints, imageSize);
  const u = unpaddedShape(height, width, grid[0] * side, grid[1] * side);
  return { grid, side, ...u, featureRows: side * side + u.rows * (u.cols + 1) };
}

/**
 * Packs projected tile features into the NeXT sequence. `tiles[0]` is the base tile, then the grid
 * tiles in row-major order; each is (side*side) x dim. `newline` is the learned image_newline (dim).
 */
export function packNextFeatures(tiles: readonly Float32Array[], layout: NextLayout, newline: Float32Array, dim: number): Float32Array {
  const { grid, side, rows, cols, top, left } = layout;
  const [gh, gw] = grid;
  if (tiles.length !== 1 + gh * gw) fail('shape', `LLaVA-NeXT packing needs ${1 + gh * gw} tiles (base + ${gh}x${gw}), got ${tiles.length}`);
  for (const t of tiles) if (t.length !== side * side * dim) fail('shape', `a tile has ${t.length} values, expected ${side * side} x ${dim}`);
  if (newline.length !== dim) fail('shape', `image_newline has ${newline.length} values, expected ${dim}`);
  const out = new Float32Array(layout.featureRows * dim);
  out.set(tiles[0]!);
  let at = side * side * dim;
  for (let r = top; r < top + rows; r++) {
    const tileRow = Math.floor(r / side);
    const py = r % side;
    for (let c = left; c < left + cols; c++) {
      const tile = tiles[1 + tileRow * gw + Math.floor(c / side)]!;
      const px = c % side;
      out.set(tile.subarray((py * side + px) * dim, (py * side + px + 1) * dim), at);
      at += dim;
    }
    out.set(newline, at);
    at += dim;
  }
  return out;
}
