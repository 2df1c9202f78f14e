// PCM16 little-endian mono at 24 kHz, the server's audio: from base64 and WAV, to WAV, to floats.
'use strict';

export const RATE = 24000;

export function base64Bytes(b64) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

// Int16 samples from bytes that may start at an odd offset (a WebSocket frame, a slice of a file).
export function int16From(bytes) {
  const copy = new Uint8Array(bytes.byteLength - (bytes.byteLength % 2));
  copy.set(new Uint8Array(bytes.buffer, bytes.byteOffset, copy.length));
  return new Int16Array(copy.buffer);
}

// A growing buffer of samples (streams arrive in pieces).
export class Pcm {
  constructor(samples = new Int16Array(0)) {
    this.data = samples;
    this.length = samples.length;
  }

  push(samples) {
    if (this.length + samples.length > this.data.length) {
      const grown = new Int16Array(Math.max(this.length + samples.length, this.data.length * 2, RATE));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(samples, this.length);
    this.length += samples.length;
  }

  get samples() {
    return this.data.subarray(0, this.length);
  }

  get seconds() {
    return this.length / RATE;
  }
}

// The samples of a 16-bit PCM WAV (what /generate answers by default): its "data" chunk.
export function wavSamples(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 12;
  while (at + 8 <= bytes.byteLength) {
    const id = String.fromCharCode(...bytes.subarray(at, at + 4));
    const size = view.getUint32(at + 4, true);
    if (id === 'data') return int16From(bytes.subarray(at + 8, Math.min(at + 8 + size, bytes.byteLength)));
    at += 8 + size + (size % 2);
  }
  throw new Error('the WAV has no data chunk');
}

export function wavBlob(samples) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) header.setUint8(at + i, s.charCodeAt(i)); };
  text(0, 'RIFF');
  header.setUint32(4, 36 + samples.byteLength, true);
  text(8, 'WAVE');
  text(12, 'fmt ');
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, RATE, true);
  header.setUint32(28, RATE * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, 'data');
  header.setUint32(40, samples.byteLength, true);
  return new Blob([header, samples], {type: 'audio/wav'});
}

export function toFloats(samples) {
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}
