// The list of takes: one card per Generate, Stream or realtime utterance, newest first, with its settings and
// figures, its waveform, and what can be done with it (play, download, re-run, use its settings, keep its voice,
// delete). Cards are rebuilt from the store (store.js) after a reload.
'use strict';

import {wavBlob} from './playground?asset=pcm.js';
import * as store from './playground?asset=store.js';
import {Waveform} from './playground?asset=waveform.js';

const EXTENSIONS = {wav: 'wav', mp3: 'mp3', opus: 'opus', aac: 'm4a', flac: 'flac'};
const SPEAKER_TAG = /\[SPEAKER\d+\]/;

export function describeSampling(s) {
  const parts = [`temperature ${s.temperature}`, `top-k ${s.top_k}`, `top-p ${s.top_p}`,
                 `max ${s.max_new_tokens} tokens`, `RAS ${s.ras_win_len}/${s.ras_win_max_num_repeat}`];
  if (s.chunk_method) parts.push(`long form: by ${s.chunk_method === 'word' ? `words (${s.chunk_max_word_num})` : 'speaker turns'}`);
  return parts.join(' · ');
}

function seedText(take) {
  if (take.seed !== null && take.seed !== undefined) return `seed ${take.seed}`;
  if (take.state === 'running') return 'seed: when done';
  if (take.seedKnown) return 'greedy (no seed needed)';
  return 'seed not reported';
}

class Card {
  constructor(take, list) {
    this.take = take;
    this.list = list;
    this.samples = null; // loaded from the store on first use
    this.el = list.template.content.firstElementChild.cloneNode(true);
    this.el.dataset.take = String(take.n);
    this.wave = new Waveform(this.$('.wave'), {
      label: `Play position of take ${take.n}`,
      onSeek: (seconds) => this.withAudio((samples) => list.player.seek(take, samples, seconds)),
    });
    this.$('.play').onclick = () => this.withAudio((samples) => list.player.toggle(take, samples));
    this.$('.download').onclick = () => this.download();
    this.$('.rerun').onclick = () => list.actions.rerun(take);
    this.$('.use').onclick = () => list.actions.useSettings(take);
    this.$('.keep').onclick = () => this.openKeep();
    this.$('.keep-cancel').onclick = () => { this.$('.keep-form').hidden = true; this.$('.keep').focus(); };
    this.$('.keep-form').onsubmit = (e) => { e.preventDefault(); this.keep(); };
    this.$('.delete').onclick = () => list.remove(this);
    for (const [cls, name] of [['.format', 'Download format'], ['.keep-name', 'Voice name']]) {
      this.$(cls).id = `take${take.n}_${cls.slice(1)}`;
      this.$(cls).setAttribute('aria-label', `${name} for take ${take.n}`);
    }
    this.render();
  }

  $(selector) {
    return this.el.querySelector(selector);
  }

  note(text, isError = false) {
    this.$('.take-note').textContent = text;
    this.$('.take-note').classList.toggle('error', isError);
  }

  render() {
    const t = this.take;
    const s = t.settings;
    const kind = {generate: 'Generate', stream: 'Stream', realtime: 'Realtime'}[t.kind];
    this.$('.take-title').textContent = `#${t.n} ${kind}`;
    const meta = [s.voiceLabel, s.scene_prompt ? `scene ${s.scene_prompt}` : 'no scene', seedText(t)];
    if (t.duration !== null && t.duration !== undefined) meta.push(`${t.duration.toFixed(2)} s`);
    if (t.firstAudioMs !== null && t.firstAudioMs !== undefined) {
      meta.push(`first audio ${Math.round(t.firstAudioMs)} ms${t.kind === 'generate' ? ' (whole file)' : ''}`);
    }
    this.$('.take-meta').textContent = `· ${meta.join(' · ')}`;
    this.$('.take-text').textContent = s.text;
    this.$('.take-sampling').textContent = describeSampling(s);
    const running = t.state === 'running';
    const reproducible = t.kind !== 'realtime' && t.state === 'done';
    for (const cls of ['.play', '.download', '.keep', '.delete', '.rerun', '.use']) this.$(cls).disabled = running;
    this.$('.rerun').disabled = running || t.kind === 'realtime';
    for (const option of this.$('.format').options) option.disabled = option.value !== 'wav' && !reproducible;
    if (SPEAKER_TAG.test(s.text)) this.$('.keep').disabled = true;
    this.$('.keep').title = SPEAKER_TAG.test(s.text) ? 'a dialogue holds several voices: keep a one-speaker take'
      : 'save this take to the voice library';
    this.el.classList.toggle('running', running);
    const notes = [];
    if (t.state === 'stopped') notes.push('Stopped before the end: this is the audio that arrived.');
    if (t.kind === 'realtime') notes.push('Realtime: spoken sentence by sentence, so only its WAV can be downloaded and it cannot be re-run.');
    if (!running && !t.audioKept) {
      notes.push(t.kind === 'realtime' ? 'Its audio is no longer kept in this browser.'
        : 'Its audio is no longer kept in this browser (over the page\'s budget): Re-run makes it again from its seed.');
    }
    if (!running) this.note(notes.join(' '));
  }

  async audio() {
    if (this.samples) return this.samples;
    const record = this.take.audioKept ? await store.loadAudio(this.take.id) : null;
    if (record) this.samples = record.samples;
    return this.samples;
  }

  async withAudio(use) {
    const samples = await this.audio();
    if (samples) use(samples);
    else this.note('Its audio is not kept in this browser: Re-run makes it again.', true);
  }

  async showAudio() {
    const samples = await this.audio();
    if (samples) this.wave.setAudio(samples);
  }

  async download() {
    const format = this.$('.format').value;
    const t = this.take;
    const name = `higgs-take-${t.n}${t.seed !== null && t.seed !== undefined ? `-seed-${t.seed}` : ''}.${EXTENSIONS[format]}`;
    const samples = await this.audio();
    try {
      let blob;
      if (format === 'wav' && samples) {
        blob = wavBlob(samples);
      } else {
        this.note(`The server is making the ${format} file again from the take's settings and seed…`);
        this.$('.download').disabled = true;
        blob = await this.list.actions.render(t, format);
        this.note(`${format} made again by the server from the take's seed (on a GPU it can differ slightly from the take).`);
      }
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = name;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    } catch (e) {
      this.note(`Download failed: ${e.message}`, true);
    } finally {
      this.$('.download').disabled = false;
    }
  }

  openKeep() {
    this.$('.keep-form').hidden = false;
    if (!this.$('.keep-transcript').value) this.$('.keep-transcript').value = this.take.settings.text;
    this.$('.keep-name').focus();
  }

  async keep() {
    const samples = await this.audio();
    if (!samples) {
      this.note('Its audio is not kept in this browser: Re-run it first, then keep the new take.', true);
      return;
    }
    const name = this.$('.keep-name').value.trim();
    try {
      await this.list.actions.keepVoice(name, this.$('.keep-transcript').value, samples,
                                        this.$('.keep-overwrite').checked);
      this.$('.keep-form').hidden = true;
      this.note(`Kept as the library voice "${name}", now selected: cloning it gives this voice every time.`);
      this.$('.keep').focus();
    } catch (e) {
      const hint = e.message.startsWith('409') ? ' (tick "replace" to overwrite it)' : '';
      this.note(`Could not keep the voice: ${e.message}${hint}`, true);
    }
  }
}

export class TakeList {
  constructor({list, note, template, player, actions}) {
    this.listEl = list;
    this.noteEl = note;
    this.template = template;
    this.player = player;
    this.actions = actions; // rerun(take), useSettings(take), render(take, format) -> Blob, keepVoice(...)
    this.cards = new Map(); // take id -> Card
  }

  async restore() {
    for (const take of await store.allTakes()) {
      if (take.state === 'running') take.state = 'stopped'; // the page went away while it ran
      const card = this.show(take);
      card.showAudio();
    }
    await this.updateNote();
  }

  nextTake(kind, settings) {
    const takes = [...this.cards.values()].map((c) => c.take);
    const n = takes.reduce((max, t) => Math.max(max, t.n), 0) + 1;
    const id = Math.max(Date.now(), ...takes.map((t) => t.id + 1));
    return {id, n, kind, settings, created: new Date().toISOString(), state: 'running', seed: null,
            seedKnown: false, duration: null, firstAudioMs: null, totalMs: null, audioKept: false};
  }

  show(take) {
    const card = new Card(take, this);
    this.cards.set(take.id, card);
    this.listEl.prepend(card.el);
    return card;
  }

  // A take that is being made: its card appears at once and fills in as the audio arrives.
  start(kind, settings) {
    const take = this.nextTake(kind, settings);
    const card = this.show(take);
    card.$('.take-progress').hidden = false;
    card.$('.take-progress span').textContent = kind === 'generate' ? 'generating the whole file…' : 'waiting for audio…';
    card.$('.take-progress progress').removeAttribute('value');
    store.saveTake(take).catch(() => {}); // storage refused: finish() says so
    this.updateNote().catch(() => {});
    return card;
  }

  progress(card, fraction, text) {
    const bar = card.$('.take-progress progress');
    bar.value = fraction;
    card.$('.take-progress span').textContent = text;
  }

  async finish(card, samples, figures, clip = null) {
    Object.assign(card.take, figures);
    card.$('.take-progress').hidden = true;
    card.samples = samples;
    card.wave.setAudio(samples);
    try {
      if (samples.length) {
        const {dropped} = await store.saveAudio(card.take, samples, clip);
        for (const take of dropped) {
          const old = this.cards.get(take.id);
          if (old) { old.take.audioKept = false; old.samples = null; old.render(); }
        }
      } else {
        await store.saveTake(card.take);
      }
      card.render();
      await this.updateNote();
    } catch (e) {
      card.render();
      card.note(`Not kept in this browser's storage (${e.message}): it lasts until a reload.`, true);
    }
  }

  // A request that failed before any audio: its card goes (the status line says why).
  async fail(card) {
    this.player.forget(card.take);
    card.el.remove();
    this.cards.delete(card.take.id);
    await store.deleteTake(card.take.id);
    await this.updateNote();
  }

  async remove(card) {
    this.player.forget(card.take);
    const next = card.el.nextElementSibling || card.el.previousElementSibling;
    card.el.remove();
    this.cards.delete(card.take.id);
    await store.deleteTake(card.take.id);
    (next ? next.querySelector('.play') : document.getElementById('generate')).focus();
    await this.updateNote();
  }

  async clear() {
    for (const card of this.cards.values()) this.player.forget(card.take);
    this.cards.clear();
    this.listEl.replaceChildren();
    await store.clearTakes();
    await this.updateNote();
  }

  tick(take, seconds) {
    const card = this.cards.get(take.id);
    if (card) card.wave.setPosition(seconds);
  }

  playing(take, isPlaying, error) {
    const card = take && this.cards.get(take.id);
    if (!card) return;
    card.$('.play').textContent = isPlaying ? 'Pause' : 'Play';
    card.el.classList.toggle('playing', isPlaying);
    if (error) card.note(`Cannot play: ${error.message}`, true);
  }

  async updateNote() {
    const used = await store.audioUsed();
    const count = this.cards.size;
    this.noteEl.textContent = count === 0
      ? 'No takes yet: each Generate, Stream or realtime utterance adds one here.'
      : `${count} take${count === 1 ? '' : 's'} kept in this browser, ${(used / 1e6).toFixed(1)} MB of audio `
        + `(up to ${Math.round(store.AUDIO_BUDGET / 1e6)} MB; older takes then keep their settings and seed, not their audio).`;
    document.getElementById('clear_takes').hidden = count === 0;
  }

  // Seconds the full width of a streaming take's waveform stands for: as much as the request can make.
  static span(maxNewTokens, chunks = 1) {
    return (maxNewTokens * chunks) / 25; // 25 audio frames a second
  }
}

