// Realtime: what is typed into #rt_text goes to WS /v1/audio/speech/stream as it is typed (input.text with the
// characters added at the end), the server speaks each sentence as it completes, in one voice for the session, and
// the PCM frames play back to back. "Speak the rest" sends input.done, Stop sends input.cancel (and silences what
// is already scheduled), "End session" sends session.close. Each finished utterance becomes a take.
'use strict';

import {$} from './playground?asset=dom.js';
import {openSocket} from './playground?asset=api.js';
import {Pcm, int16From} from './playground?asset=pcm.js';
import {StreamPlayer} from './playground?asset=player.js';
import {Waveform} from './playground?asset=waveform.js';

export class Realtime {
  // settings(): the form's settings; onUtterance(settings, text, samples, figures): a finished utterance.
  constructor(settings, onUtterance) {
    this.settings = settings;
    this.onUtterance = onUtterance;
    this.ws = null;
    this.opening = null;
    this.sent = ''; // the text of #rt_text already sent (or dropped by a Stop)
    this.configured = null; // the session.config last sent, as JSON
    this.utterance = 0; // the server's index of the utterance being typed
    this.live = 0; // utterances below this were cancelled: frames of theirs still in flight are dropped
    this.open = false; // an utterance has text on the server
    this.records = new Map(); // utterance index -> {settings, text, pieces, pcm, firstAudioMs, started}
    this.current = null; // the sentence whose frames arrive: {record, li, bytes}
    this.player = null;
    this.wave = new Waveform($('rt_wave'));
    this.chain = Promise.resolve(); // messages leave in order, after the socket opens
    $('rt_text').addEventListener('input', () => this.typed());
    $('rt_done').onclick = () => this.finish();
    $('rt_stop').onclick = () => this.stop();
    $('rt_close').onclick = () => this.close();
    window.playground.realtime = this;
  }

  status(text, isError = false) {
    $('rt_status').textContent = text;
    $('rt_status').classList.toggle('error', isError);
  }

  buttons() {
    const connected = this.ws !== null;
    $('rt_stop').disabled = !connected;
    $('rt_close').disabled = !connected;
  }

  send(message) {
    this.chain = this.chain.then(async () => {
      const ws = await this.connect();
      ws.send(JSON.stringify(message));
    }).catch((e) => this.status(e.message, true));
    return this.chain;
  }

  connect() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    if (this.opening) return this.opening;
    this.status('connecting…');
    this.opening = new Promise((resolve, reject) => {
      const ws = openSocket('v1/audio/speech/stream');
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        this.ws = ws;
        this.opening = null;
        this.buttons();
        this.status('connected: sentences are spoken as they end');
        resolve(ws);
      };
      ws.onmessage = (e) => this.received(e.data);
      ws.onclose = (e) => {
        const wasOpen = this.ws === ws;
        this.ws = null;
        this.opening = null;
        this.open = false;
        this.configured = null; // the next connection is a new session: its first message must be a config
        // and the server counts its utterances from 0 again (a session.close lets the last one finish first)
        this.records.clear();
        this.current = null;
        this.utterance = 0;
        this.live = 0;
        this.sent = $('rt_text').value;
        this.buttons();
        if (!wasOpen) {
          reject(new Error('could not open a realtime session (is the API key right? see the server log)'));
        } else if (!$('rt_status').classList.contains('error')) {
          this.status(`session ended${e.reason ? `: ${e.reason}` : ''}; typing starts a new one`);
        }
      };
    });
    return this.opening;
  }

  sessionConfig() {
    const s = this.settings();
    // PCM as it is made (a session's default is one WAV file per sentence, as vllm-omni's).
    const config = {type: 'session.config', response_format: 'pcm', stream_audio: true,
                    voice: s.voice || null, instructions: s.scene_prompt,
                    temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, max_new_tokens: s.max_new_tokens,
                    ras_win_len: s.ras_win_len, ras_win_max_num_repeat: s.ras_win_max_num_repeat};
    if (s.seed !== null) config.seed = s.seed;
    return {config, settings: s};
  }

  typed() {
    const value = $('rt_text').value;
    if (!value.startsWith(this.sent)) {
      // An edit before the end cannot be taken back: what was sent is spoken (or queued). New text at the end is.
      this.sent = value;
      this.status('an edit before the end is not sent: only text added at the end is spoken');
      return;
    }
    const piece = value.slice(this.sent.length);
    if (!piece) return;
    this.sent = value;
    this.speak(piece);
  }

  speak(piece) {
    if (!this.open) {
      const {config, settings} = this.sessionConfig();
      const json = JSON.stringify(config);
      if (json !== this.configured) {
        this.send(config);
        this.configured = json;
      }
      this.records.set(this.utterance, {settings, text: '', pieces: [], pcm: new Pcm(), firstAudioMs: null,
                                        started: performance.now()});
      this.open = true;
      if (!this.player) this.player = new StreamPlayer();
      $('rt_sentences').replaceChildren();
    }
    const record = this.records.get(this.utterance);
    record.text += piece;
    this.send({type: 'input.text', text: piece}).then(() => record.pieces.push({end: record.text.length,
                                                                                  at: performance.now()}));
  }

  finish() {
    this.typed();
    if (!this.open) return;
    const record = this.records.get(this.utterance);
    this.send({type: 'input.done'}).then(() => { record.doneAt = performance.now(); });
    this.open = false;
    this.utterance += 1;
  }

  stop() {
    if (!this.ws) return;
    this.send({type: 'input.cancel'});
    if (this.player) this.player.stop();
    this.player = null;
    this.open = false;
    this.utterance += 1;
    this.live = this.utterance;
    this.sent = $('rt_text').value;
    for (const li of $('rt_sentences').querySelectorAll('li.speaking, li.queued')) {
      li.className = 'stopped';
      li.querySelector('.state').textContent = 'stopped';
    }
    this.status('stopped: nothing more of what was typed is spoken; type on to start again');
  }

  close() {
    if (!this.ws) return;
    this.finish();
    this.send({type: 'session.close'});
  }

  received(data) {
    if (data instanceof ArrayBuffer) {
      const c = this.current;
      if (!c || c.utterance < this.live) return; // a cancelled utterance's frame still in flight
      const samples = int16From(new Uint8Array(data));
      if (c.record.firstAudioMs === null) {
        c.record.firstAudioMs = performance.now() - (this.completedAt(c.record, c.text) ?? c.record.started);
        c.record.offset = this.player.queued; // where this utterance starts in the session's playback
      }
      c.record.pcm.push(samples);
      this.player.push(samples);
      this.wave.setAudio(c.record.pcm.samples, Math.max(5, c.record.pcm.seconds));
      this.follow();
      return;
    }
    const event = JSON.parse(data);
    if (event.type === 'audio.start') {
      if (event.utterance_index < this.live) return;
      const record = this.records.get(event.utterance_index);
      // The session's seed (the server's pick when none was typed): the take shows the one the audio used.
      if (record && record.settings.seed == null && event.seed != null) record.settings.seed = event.seed;
      const li = document.createElement('li');
      li.className = 'speaking';
      li.innerHTML = '<q></q> <span class="state">speaking…</span>';
      li.querySelector('q').textContent = event.sentence_text;
      $('rt_sentences').append(li);
      this.current = {record, li, utterance: event.utterance_index, text: event.sentence_text};
      this.status(`speaking: "${event.sentence_text}"`);
    } else if (event.type === 'audio.done') {
      if (event.utterance_index < this.live || !this.current) return;
      this.current.li.className = 'spoken';
      this.current.li.querySelector('.state').textContent = `spoken (${(event.total_bytes / 48000).toFixed(2)} s)`;
    } else if (event.type === 'session.done') {
      const record = this.records.get(event.utterance_index);
      this.records.delete(event.utterance_index);
      if (!record || event.utterance_index < this.live) return;
      this.status(`done: ${event.total_sentences} sentence${event.total_sentences === 1 ? '' : 's'} spoken, kept as a take`);
      if (record.pcm.length) {
        this.onUtterance(record.settings, record.text, record.pcm.samples,
                         {duration: record.pcm.seconds, firstAudioMs: record.firstAudioMs});
      }
    } else if (event.type === 'cancelled') {
      for (const index of [...this.records.keys()]) if (index < this.live) this.records.delete(index);
      this.current = null;
    } else if (event.type === 'error') {
      this.status(`error: ${event.message}`, true);
    }
  }

  // When the sentence could be known to be complete: the piece that brought the character after its end mark.
  completedAt(record, sentence) {
    const at = record.text.indexOf(sentence);
    if (at < 0) return null;
    const needed = at + sentence.length + 1;
    const piece = record.pieces.find((p) => p.end >= needed);
    return piece ? piece.at : (record.doneAt ?? null);
  }

  follow() {
    if (this.following) return;
    this.following = true;
    const step = () => {
      const player = this.player;
      if (!player || !player.playing) {
        this.following = false;
        return;
      }
      const record = this.current && this.current.record;
      if (record) this.wave.setPosition(Math.min(player.position - (record.offset || 0), record.pcm.seconds));
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }
}
