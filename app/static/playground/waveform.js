// A take's waveform on a canvas, drawn from its PCM (min and max per pixel column), with the play position.
// While a stream arrives the drawing grows from the left against the length the request can reach at most.
// The canvas is a slider when given onSeek: click or arrow keys move the play position.
// The drawing is scaled to the take's loudest peak (at most 30x), so quiet takes show their shape too.
'use strict';

import {RATE} from './playground?asset=pcm.js';

const PLAYED = '#1f4e9c';
const UNPLAYED = '#7f9cc9';
const HEAD = '#c62828';

export class Waveform {
  constructor(canvas, {label = 'Play position', onSeek = null} = {}) {
    this.canvas = canvas;
    this.samples = new Int16Array(0);
    this.span = 0; // seconds the full width stands for
    this.position = 0;
    this.peaks = null;
    this.onSeek = onSeek;
    if (onSeek) {
      canvas.setAttribute('aria-label', label);
      canvas.addEventListener('click', (e) => {
        const box = canvas.getBoundingClientRect();
        this.seek(((e.clientX - box.left) / box.width) * this.span);
      });
      canvas.addEventListener('keydown', (e) => this.key(e));
    }
    new ResizeObserver(() => { this.peaks = null; this.draw(); }).observe(canvas);
  }

  get seconds() {
    return this.samples.length / RATE;
  }

  setAudio(samples, span = samples.length / RATE) {
    this.samples = samples;
    this.span = Math.max(span, samples.length / RATE);
    this.peaks = null;
    this.draw();
  }

  setPosition(seconds) {
    this.position = Math.min(Math.max(seconds, 0), this.seconds);
    this.draw();
  }

  seek(seconds) {
    if (!this.onSeek || !this.seconds) return;
    this.setPosition(seconds);
    this.onSeek(this.position);
  }

  key(e) {
    const steps = {ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1, PageDown: -5, PageUp: 5};
    if (e.key in steps) this.seek(this.position + steps[e.key]);
    else if (e.key === 'Home') this.seek(0);
    else if (e.key === 'End') this.seek(this.seconds);
    else return;
    e.preventDefault();
  }

  columnPeaks(columns) {
    const perColumn = (this.span * RATE) / columns;
    const peaks = new Float32Array(columns * 2);
    const s = this.samples;
    for (let c = 0; c < columns; c++) {
      const from = Math.floor(c * perColumn);
      const to = Math.min(s.length, Math.floor((c + 1) * perColumn));
      if (from >= s.length) break;
      let lo = 0;
      let hi = 0;
      for (let i = from; i < Math.max(to, from + 1); i++) {
        if (s[i] < lo) lo = s[i];
        if (s[i] > hi) hi = s[i];
      }
      peaks[2 * c] = lo / 32768;
      peaks[2 * c + 1] = hi / 32768;
    }
    return peaks;
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      this.peaks = null;
    }
    if (!this.peaks && this.span > 0) {
      this.peaks = this.columnPeaks(width);
      // Quiet audio is scaled up to be seen (up to 30x), as waveform views do; 
      const loudest = this.peaks.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      this.gain = loudest > 0 ? Math.min(0.95 / loudest, 30) : 1;
    }
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, width, height);
    const middle = height / 2;
    const drawn = this.span > 0 ? Math.ceil((this.seconds / this.span) * width) : 0;
    const playedTo = this.span > 0 ? (this.position / this.span) * width : 0;
    for (let c = 0; c < drawn && this.peaks; c++) {
      const lo = this.peaks[2 * c] * this.gain;
      const hi = this.peaks[2 * c + 1] * this.gain;
      g.fillStyle = c < playedTo ? PLAYED : UNPLAYED;
      const top = middle - hi * middle;
      g.fillRect(c, top, 1, Math.max(1, (hi - lo) * middle));
    }
    if (this.position > 0 && this.position < this.seconds) {
      g.fillStyle = HEAD;
      g.fillRect(Math.round(playedTo), 0, Math.max(1, Math.round(ratio)), height);
    }
    if (this.onSeek) {
      canvas.setAttribute('aria-valuemax', this.seconds.toFixed(2));
      canvas.setAttribute('aria-valuenow', this.position.toFixed(2));
      canvas.setAttribute('aria-valuetext', `${this.position.toFixed(1)} s of ${this.seconds.toFixed(1)} s`);
    }
  }
}
