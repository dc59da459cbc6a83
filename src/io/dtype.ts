/**
 * Half-precision conversions for checkpoint I/O. F16 -> F32 goes through a 65,536-entry table
 * (256 KB, built on first use): one lookup per value, exact for every bit pattern including
 * subnormals, Inf and NaN. BF16 is the top half of an F32, so it is a shift.
 */

let f16Table: Float32Array | null = null; // [65536] F32 value of every F16 bit pattern

function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24; // subnormal (and zero)
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return t;
}

/** out[i] = f16(src[i]) for raw F16 bits `src`. */
export function f16ToF32(src: Uint16Array, out: Float32Array): void {
  const t = (f16Table ??= buildF16Table());
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
}

/** out[i] = bf16(src[i]) for raw BF16 bits `src`. */
export function bf16ToF32(src: Uint16Array, out: Float32Array): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** F32 -> F16 bits with round-to-nearest-even; overflow becomes Inf, NaN stays NaN. */
export function f32ToF16(src: Float32Array, out: Uint16Array): void {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff, mant = x & 0x7fffff;
    let h: number;
    if (exp === 0xff) h = sign | 0x7c00 | (mant ? 0x200 : 0);
    else {
      const e = exp - 127 + 15;
      if (e >= 31) h = sign | 0x7c00;
      else if (e <= 0) {
        if (e < -10) h = sign; // too small even for a subnormal
        else {
          // Subnormal: shift the mantissa (with its implicit 1) into place, rounding to even.
          const m = mant | 0x800000, shift = 14 - e;
          const half = 1 << (shift - 1), rest = m & ((1 << shift) - 1);
          let v = m >>> shift;
          if (rest > half || (rest === half && v & 1)) v++;
          h = sign | v;
        }
      } else {
        let v = (e << 10) | (mant >>> 13);
        const rest = mant & 0x1fff;
        if (rest > 0x1000 || (rest === 0x1000 && v & 1)) v++; // may carry into the exponent: still correct
        h = sign | v;
      }
    }
    out[i] = h;
  }
}

/** F32 -> BF16 bits with round-to-nearest-even; NaN stays NaN. */
export function f32ToBf16(src: Float32Array, out: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) out[i] = (x >>> 16) | 0x40;
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
}
