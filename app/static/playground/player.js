// Playing audio: pieces of a stream scheduled back to back with Web Audio (gapless), and whole takes through one
// <audio> element, so one take plays at a time and its waveform follows the play position.
'use strict';

import {RATE, toFloats, wavBlob} from './playground?asset=pcm.js';

let shared = null;

// One AudioContext for the page at the server's rate (browsers limit how many a page may open).
export function audioContext() {
  if (!shared) shared = new AudioContext({sampleRate: RATE});
  if (shared.state === 'suspended') shared.resume().catch(() => {});
  return shared;
}

export class StreamPlayer {
  constructor() {
    this.context = audioContext();
    this.sources = new Set();
    this.segments = []; // {at: context time, offset: seconds into the audio, duration}
    this.playAt = this.context.currentTime + 0.05;
    this.queued = 0; // seconds of audio handed to Web Audio
  }

  push(samples) {
    if (!samples.length) return;
    const ctx = this.context;
    const buffer = ctx.createBuffer(1, samples.length, RATE);
    buffer.getChannelData(0).set(toFloats(samples));
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    this.playAt = Math.max(this.playAt, ctx.currentTime + 0.01); // a late piece starts now, not in the past
    source.start(this.playAt);
    source.onended = () => this.sources.delete(source);
    this.sources.add(source);
    this.segments.push({at: this.playAt, offset: this.queued, duration: buffer.duration});
    this.playAt += buffer.duration;
    this.queued += buffer.duration;
  }

  // Seconds of the stream heard so far.
  get position() {
    const now = this.context.currentTime;
    let heard = 0;
    for (const s of this.segments) {
      if (s.at > now) break;
      heard = s.offset + Math.min(now - s.at, s.duration);
    }
    return heard;
  }

  get playing() {
    return this.sources.size > 0;
  }

  stop() {
    for (const source of this.sources) {
      source.onended = null;
      try { source.stop(); } catch (e) { /* not started yet */ }
    }
    this.sources.clear();
  }
}

// Whole takes: one <audio> element for the page; `onTick(take, seconds)` follows the position while it plays.
export class TakePlayer {
  constructor(onTick, onState) {
    this.element = new Audio();
    this.take = null;
    this.url = null;
    this.onTick = onTick;
    this.onState = onState;
    const tick = () => {
      if (this.take) this.onTick(this.take, this.element.currentTime);
      if (!this.element.paused) requestAnimationFrame(tick);
    };
    this.element.addEventListener('play', () => { this.onState(this.take, true); requestAnimationFrame(tick); });
    this.element.addEventListener('pause', () => this.onState(this.take, false));
    this.element.addEventListener('ended', () => { this.onState(this.take, false); tick(); });
  }

  load(take, samples) {
    if (this.take === take) return;
    this.pause();
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = URL.createObjectURL(wavBlob(samples));
    this.element.src = this.url;
    this.take = take;
  }

  toggle(take, samples) {
    if (this.take === take && !this.element.paused) {
      this.element.pause();
      return;
    }
    this.load(take, samples);
    if (this.element.ended) this.element.currentTime = 0;
    this.element.play().catch((e) => this.onState(take, false, e));
  }

  seek(take, samples, seconds) {
    this.load(take, samples);
    this.element.currentTime = seconds;
    this.onTick(take, seconds);
  }

  pause() {
    if (!this.element.paused) this.element.pause();
  }

  forget(take) {
    if (this.take === take) {
      this.pause();
      this.take = null;
      this.element.removeAttribute('src');
    }
  }

  // Play a file that is not a take (a library voice's clip).
  playUrl(url) {
    this.pause();
    this.take = null;
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = url;
    this.element.src = url;
    return this.element.play();
  }
}
