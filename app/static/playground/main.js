// The playground's wiring: the form's settings, Generate / Stream / Stop, the takes, the voice library, the
// dialogue helper and realtime. window.playground says what the page is doing (for people poking at it in the
// console, and for the browser tests).
'use strict';

import {$} from './playground?asset=dom.js';
import {apiKey, getJson, setApiKey} from './playground?asset=api.js';
import {Dialogue} from './playground?asset=dialogue.js';
import {generateTake, renderFile, streamTake} from './playground?asset=generate.js';
import {Library, fillVoicePicker} from './playground?asset=library.js';
import {Pcm} from './playground?asset=pcm.js';
import {StreamPlayer, TakePlayer} from './playground?asset=player.js';
import {Realtime} from './playground?asset=realtime.js';
import {loadAudio} from './playground?asset=store.js';
import {TakeList} from './playground?asset=takes.js';

const state = window.playground = {ready: false, busy: false, stream: null};
let controller = null;

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

const number = (id) => ($(id).value === '' ? null : Number($(id).value));

// What the form asks for: the settings a take records, and the request fields they become (generate.js).
function readSettings() {
  const text = $('text').value;
  if (!text.trim()) throw new Error('type some text to speak');
  const clip = $('ref_file').files[0] || null;
  const dialogue = clip ? null : state.dialogue.voicesFor(text);
  if (dialogue && dialogue.error) throw new Error(dialogue.error);
  const voice = $('voice').value || null;
  let ref_audio = voice;
  let voiceLabel = voice ? `voice ${voice}` : 'smart voice';
  if (clip) [ref_audio, voiceLabel] = [null, `clip ${clip.name}`];
  else if (dialogue) [ref_audio, voiceLabel] = [dialogue.ref_audio, dialogue.label];
  return {
    text, ref_audio, voice, voiceLabel, scene_prompt: $('scene').value,
    temperature: number('temperature'), top_k: number('top_k'), top_p: number('top_p'), seed: number('seed'),
    max_new_tokens: number('max_new_tokens'), ras_win_len: number('ras_win_len'),
    ras_win_max_num_repeat: number('ras_win_max_num_repeat'), chunk_method: $('chunk_method').value || null,
    chunk_max_word_num: number('chunk_max_word_num'),
    clipName: clip ? clip.name : null, ref_text: clip ? $('ref_text').value.trim() : null,
  };
}

function busy(on) {
  state.busy = on;
  $('generate').disabled = $('stream').disabled = on;
  $('stop').disabled = !on;
}

// One Generate or Stream: a take card at once, filled in as the answer arrives.
async function run(kind, settings, seed, clip) {
  if (state.busy) {
    setStatus('one take at a time: wait for this one, or Stop it', true);
    return;
  }
  if (kind === 'stream' && clip) {
    setStatus('Stream uses named voices: clear the clip, or Generate to clone from it.', true);
    return;
  }
  busy(true);
  controller = new AbortController();
  const card = state.takes.start(kind, settings);
  const started = performance.now();
  const pcm = new Pcm();
  let firstAudioMs = null;
  setStatus(kind === 'generate' ? 'generating…' : 'streaming…');
  try {
    if (kind === 'generate') {
      const {samples, result} = await generateTake(settings, seed, clip, controller.signal);
      const ms = performance.now() - started;
      await state.takes.finish(card, samples, {state: 'done', seed: result.seed, seedKnown: true,
                                               duration: result.duration, firstAudioMs: ms, totalMs: ms}, clip);
      setStatus(`done: ${result.duration.toFixed(2)} s of audio in ${(ms / 1000).toFixed(2)} s`);
    } else {
      const player = state.stream = new StreamPlayer();
      let span = TakeList.span(settings.max_new_tokens);
      follow(card, player);
      const done = await streamTake(settings, seed, controller.signal, {
        audio(samples, progress) {
          if (firstAudioMs === null) {
            firstAudioMs = performance.now() - started;
            card.take.firstAudioMs = firstAudioMs;
            card.render();
          }
          pcm.push(samples);
          player.push(samples);
          if (progress) {
            span = TakeList.span(progress.max_new_tokens, progress.total_chunks);
            const fraction = (progress.chunk + progress.generated_tokens / progress.max_new_tokens) / progress.total_chunks;
            const chunk = progress.total_chunks > 1 ? `chunk ${progress.chunk + 1} of ${progress.total_chunks} · ` : '';
            state.takes.progress(card, Math.min(1, fraction),
                                 `${chunk}${progress.generated_tokens} of ${progress.max_new_tokens} tokens · ${pcm.seconds.toFixed(1)} s`);
          }
          card.wave.setAudio(pcm.samples, span);
        },
      });
      const ms = performance.now() - started;
      await state.takes.finish(card, pcm.samples, {state: 'done', seed: done.seed, seedKnown: true,
                                                   duration: done.duration, firstAudioMs, totalMs: ms});
      setStatus(`done: ${done.duration.toFixed(2)} s streamed in ${(ms / 1000).toFixed(2)} s`);
    }
  } catch (e) {
    if (e.name === 'AbortError' && pcm.length) {
      await state.takes.finish(card, pcm.samples, {state: 'stopped', seed, seedKnown: seed !== null,
                                                   duration: pcm.seconds, firstAudioMs});
      setStatus('stopped');
    } else {
      await state.takes.fail(card);
      setStatus(e.name === 'AbortError' ? 'stopped' : `error ${e.message}`, e.name !== 'AbortError');
    }
  } finally {
    controller = null;
    busy(false);
  }
}

// The streaming take's play position follows what Web Audio has played.
function follow(card, player) {
  const step = () => {
    if (state.stream !== player) return;
    card.wave.setPosition(player.position);
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

function stopStream() {
  if (state.stream) state.stream.stop();
  state.stream = null;
}

function start(kind) {
  try {
    const settings = readSettings();
    run(kind, settings, settings.seed, $('ref_file').files[0] || null);
  } catch (e) {
    setStatus(e.message, true);
  }
}

const seedOf = (take) => (take.seedKnown ? take.seed : take.settings.seed);

async function clipOf(take) {
  if (!take.settings.clipName) return null;
  const record = await loadAudio(take.id);
  if (!record || !record.clip) throw new Error('the clip this take was cloned from is no longer kept in this browser');
  return record.clip;
}

const actions = {
  async rerun(take) {
    try {
      stopStream();
      await run(take.kind === 'stream' ? 'stream' : 'generate', take.settings, seedOf(take), await clipOf(take));
    } catch (e) {
      setStatus(`cannot re-run take ${take.n}: ${e.message}`, true);
    }
  },
  useSettings(take) {
    const s = take.settings;
    $('text').value = s.text;
    for (const id of ['temperature', 'top_k', 'top_p', 'max_new_tokens', 'ras_win_len', 'ras_win_max_num_repeat',
                      'chunk_max_word_num']) $(id).value = s[id] ?? '';
    $('seed').value = seedOf(take) ?? '';
    $('scene').value = s.scene_prompt;
    $('voice').value = s.voice || '';
    $('chunk_method').value = s.chunk_method || '';
    showVoiceNote();
    setStatus(`the form holds take ${take.n}'s settings${s.clipName ? ' (pick its clip file again to clone from it)' : ''}`);
    $('text').focus();
  },
  async render(take, format) {
    return renderFile(take.settings, seedOf(take), await clipOf(take), format);
  },
  keepVoice(name, transcript, samples, overwrite) {
    return state.library.keep(name, transcript, samples, overwrite);
  },
};

function showModel(info) {
  // Which model answers, and whether it is make demo's random one (noise is then what it should sound like).
  const demo = info.random_weights ? ' (a demo: random weights, so it speaks noise)' : '';
  const loading = info.is_loaded ? '' : ` (not loaded yet${info.load_error ? ': ' + info.load_error : ''})`;
  $('model_note').textContent = `Model: ${info.model_name} on ${info.device}${demo}${loading}`;
  $('model_note').className = info.random_weights || !info.is_loaded ? 'error' : '';
  $('max_new_tokens').max = info.max_new_tokens;
  if (Number($('max_new_tokens').value) > info.max_new_tokens) $('max_new_tokens').value = info.max_new_tokens;
}

function showVoiceNote() {
  const option = $('voice').selectedOptions[0];
  let note = '';
  if ($('ref_file').files[0]) note = 'The clip file is cloned instead of the voice picked here.';
  else if (/\[SPEAKER\d+\]/.test($('text').value)) {
    note = 'The text is a dialogue: each speaker gets the voice picked in the dialogue helper.';
  } else if (option && option.dataset.synthetic) {
    note = 'This voice is a synthetic stand-in (espeak-ng): cloning it gives a synthetic voice. '
           + 'Add a real recording to the voice library, or keep a voice you like from a take.';
  } else if (!$('voice').value) note = 'The smart voice changes on every request: keep one you like from its take.';
  $('voice_note').textContent = note;
}

async function loadChoices() {
  // At load, and again when the API key changes: a server with a key answers 401 until it is typed.
  try {
    const [scenes, api, info] = await Promise.all([getJson('scenes'), getJson('openapi.json'), getJson('info')]);
    showModel(info);
    const defaultScene = api.components.schemas.Generate.properties.scene_prompt.default;
    const current = $('scene').value;
    $('scene').replaceChildren(new Option('none', ''));
    for (const s of scenes.scenes || []) $('scene').add(new Option(s.name, s.name));
    $('scene').value = state.ready ? current : defaultScene;
    await state.library.load();
    await state.restored;
    state.ready = true;
    setStatus('');
  } catch (e) {
    setStatus(`could not load voices and scenes (${e.message})`, true);
  }
  showVoiceNote();
}

function wire() {
  const player = new TakePlayer((take, seconds) => state.takes.tick(take, seconds),
                                (take, playing, error) => state.takes.playing(take, playing, error));
  player.element.addEventListener('play', stopStream); // a take played over a stream still sounding
  state.player = player;
  state.takes = new TakeList({list: $('take_list'), note: $('takes_note'), template: $('take_template'), player,
                              actions});
  state.dialogue = new Dialogue($('text'), $('speakers'), $('add_speaker'));
  state.library = new Library(player, (voices, profiles) => {
    fillVoicePicker($('voice'), voices, profiles, 'smart voice (the model picks)');
    state.dialogue.setVoices(voices, profiles);
    showVoiceNote();
  });
  state.realtime = new Realtime(readRealtimeSettings, async (settings, text, samples, figures) => {
    const card = state.takes.start('realtime', {...settings, text});
    await state.takes.finish(card, samples, {state: 'done', seed: settings.seed, seedKnown: settings.seed !== null,
                                             ...figures});
  });

  $('generate').onclick = () => start('generate');
  $('stream').onclick = () => start('stream');
  $('stop').onclick = () => { if (controller) controller.abort(); stopStream(); };
  $('text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (!state.busy) start(e.shiftKey ? 'stream' : 'generate');
    }
  });
  $('voice').onchange = showVoiceNote;
  $('text').addEventListener('input', showVoiceNote);
  $('ref_file').onchange = showVoiceNote;
  $('clear_clip').onclick = () => { $('ref_file').value = ''; showVoiceNote(); };
  $('clear_takes').onclick = () => {
    if (confirm('Delete every take kept in this browser?')) state.takes.clear();
  };
  $('api_key').value = apiKey();
  const useKey = () => {
    if ($('api_key').value.trim() === apiKey() && state.ready) return;
    setApiKey($('api_key').value.trim());
    loadChoices();
  };
  $('api_key').onchange = useKey;
  $('key_form').onsubmit = (e) => { e.preventDefault(); useKey(); };
}

// Realtime speaks one voice: the voice picker's (a dialogue's or a clip's voices do not apply).
function readRealtimeSettings() {
  const voice = $('voice').value || null;
  return {text: '', ref_audio: voice, voice, voiceLabel: voice ? `voice ${voice}` : 'smart voice',
          scene_prompt: $('scene').value, temperature: number('temperature'), top_k: number('top_k'),
          top_p: number('top_p'), seed: number('seed'), max_new_tokens: number('max_new_tokens'),
          ras_win_len: number('ras_win_len'), ras_win_max_num_repeat: number('ras_win_max_num_repeat'),
          chunk_method: null, chunk_max_word_num: null, clipName: null, ref_text: null};
}

wire();
state.restored = state.takes.restore().catch((e) => {
  $('takes_note').textContent = `Takes cannot be kept in this browser's storage (${e.message}): they last until a reload.`;
});
loadChoices();
