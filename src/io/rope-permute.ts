/**
 * Row permutations of q/k projection weights between the two RoPE conventions.
 *
 * llama2.c (and Meta's original Llama) rotate interleaved pairs (2i, 2i+1) of each head; HF
 * Llama rotates halves (i, i + hd/2). Both give pair i the frequency theta^(-2i/hd), so moving
 * row 2i+j of a head to row j*hd/2 + i turns one convention into the other:
 *
 *   halves[h*hd + j*hd/2 + i] = interleaved[h*hd + 2i + j]     (j in {0, 1}, i < hd/2)
 *
 * `interleavedToHalves` is HF's `permute` in convert_llama_weights_to_hf.py (Meta -> HF);
 * `halvesToInterleaved` is llama2.c's `permute_reverse` in export.py (HF -> llama2.c).
 */

/** Maps a weight [nHeads*hd, cols] with interleaved-pair rows to the halves layout (new array). */
export function interleavedToHalves(w: Float32Array, nHeads: number, cols: number): Float32Array {
  return permuteRows(w, nHeads, cols, true);
}

/** The inverse of interleavedToHalves: halves layout -> interleaved pairs (new array). */
export function halvesToInterleaved(w: Float32Array, nHeads: number, cols: number): Float32Array {
  return permuteRows(w, nHeads, cols, false);
}

function permuteRows(w: Float32Array, nHeads: number, cols: number, toHalves: boolean): Float32Array {
  const rows = w.length / cols, hd = rows / nHeads, half = hd / 2;
  if (!Number.isInteger(rows) || !Number.isInteger(half)) throw new Error(`cannot permute ${w.length} values as ${nHeads} heads of even width x ${cols} columns`);
  const out = new Float32Array(w.length); // [nHeads*hd, cols]
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const inter = h * hd + 2 * i + j, halves = h * hd + j * half + i;
        const [src, dst] = toHalves ? [inter, halves] : [halves, inter];
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}
