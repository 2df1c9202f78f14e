// One take's request: POST /generate (or /generate-upload with a clip file) for the whole file, POST
// /generate-stream for PCM pieces as they are made, and the same settings and seed again for a file in another
// format. `settings` is what the form held (main.js readSettings); `seed` the one to send (null: the server picks).
'use strict';

import {postJson, request} from './playground?asset=api.js';
import {base64Bytes, int16From, wavSamples} from './playground?asset=pcm.js';

const FIELDS = ['text', 'scene_prompt', 'temperature', 'top_k', 'top_p', 'max_new_tokens', 'ras_win_len',
                'ras_win_max_num_repeat'];

export function requestBody(settings, seed, extra = {}) {
  const body = {};
  for (const field of FIELDS) body[field] = settings[field];
  if (settings.ref_audio) body.ref_audio = settings.ref_audio;
  if (seed !== null && seed !== undefined) body.seed = seed;
  if (settings.chunk_method) {
    body.chunk_method = settings.chunk_method;
    body.chunk_max_word_num = settings.chunk_max_word_num;
  }
  return {...body, ...extra};
}

function uploadForm(settings, seed, clip, extra) {
  const form = new FormData();
  for (const [key, value] of Object.entries(requestBody(settings, seed, extra))) {
    if (key !== 'ref_audio') form.append(key, String(value));
  }
  form.append('ref_audio_file', clip, settings.clipName || 'clip');
  if (settings.ref_text) form.append('ref_text', settings.ref_text);
  return form;
}

async function whole(settings, seed, clip, format, signal) {
  const extra = {response_format: format};
  const response = clip
    ? await request('generate-upload', {method: 'POST', body: uploadForm(settings, seed, clip, extra), signal})
    : await postJson('generate', requestBody(settings, seed, extra), signal);
  return response.json();
}

// The whole WAV: {samples, result} (result: /generate's answer, its seed included).
export async function generateTake(settings, seed, clip, signal) {
  const result = await whole(settings, seed, clip, 'wav', signal);
  return {samples: wavSamples(base64Bytes(result.audio_base64)), result};
}

// The take made again as a file in `format` (its seed makes the same audio).
export async function renderFile(settings, seed, clip, format) {
  const result = await whole(settings, seed, clip, format);
  return new Blob([base64Bytes(result.audio_base64)], {type: result.content_type});
}

// Server-sent events: on.audio(samples, progress) for each piece; resolves with the done event.
export async function streamTake(settings, seed, signal, on) {
  const response = await postJson('generate-stream', requestBody(settings, seed), signal);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) throw new Error('the stream ended without a done event');
    pending += value;
    let cut;
    while ((cut = pending.indexOf('\n\n')) >= 0) {
      const block = pending.slice(0, cut);
      pending = pending.slice(cut + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
      if (!data) continue; // a keep-alive comment
      const event = JSON.parse(data);
      if (event.type === 'audio') on.audio(int16From(base64Bytes(event.audio_base64)), event.progress);
      else if (event.type === 'done') return event;
      else if (event.type === 'error') throw new Error(event.message);
    }
  }
}
