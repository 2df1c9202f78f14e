// The voice library: GET /voices (and the profile:NAME voices of GET /v1/audio/voices), a play button per voice
// (GET /voices/NAME/audio), adding one (POST /voices, multipart) and deleting one (DELETE /voices/NAME). Every
// change reloads the list, and with it the voice pickers (`onChange(voices, profiles)`).
'use strict';

import {$} from './playground?asset=dom.js';
import {getJson, request} from './playground?asset=api.js';
import {wavBlob} from './playground?asset=pcm.js';

export class Library {
  constructor(player, onChange) {
    this.player = player;
    this.onChange = onChange;
    this.voices = [];
    this.profiles = [];
    $('upload_form').onsubmit = (e) => { e.preventDefault(); this.upload(); };
  }

  status(text, isError = false) {
    $('library_status').textContent = text;
    $('library_status').classList.toggle('error', isError);
  }

  async load() {
    const [library, openai] = await Promise.all([getJson('voices'), getJson('v1/audio/voices')]);
    this.voices = library.voices || [];
    this.profiles = (openai.data || []).filter((v) => v.type === 'profile');
    this.render();
    this.onChange(this.voices, this.profiles);
  }

  render() {
    const items = this.voices.map((voice) => {
      const li = document.createElement('li');
      li.dataset.voice = voice.name;
      const name = document.createElement('strong');
      name.textContent = voice.name;
      li.append(name);
      if (voice.synthetic) {
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = 'synthetic';
        badge.title = 'a synthetic stand-in (espeak-ng): cloning it gives a synthetic voice';
        li.append(' ', badge);
      }
      const buttons = document.createElement('span');
      buttons.className = 'row-buttons';
      buttons.append(this.button('Play', `Play the voice ${voice.name}`, () => this.play(voice.name)),
                     this.button('Use', `Use the voice ${voice.name}`, () => this.use(voice.name)),
                     this.button('Delete', `Delete the voice ${voice.name}`, () => this.remove(voice.name)));
      li.append(' ', buttons);
      if (voice.source) {
        const source = document.createElement('span');
        source.className = 'hint';
        source.textContent = voice.source;
        li.append(source);
      }
      return li;
    });
    if (!items.length) {
      items.push(document.createElement('li'));
      items[0].textContent = 'No voices in the library yet: add one below, or keep one from a take.';
    }
    $('voice_list').replaceChildren(...items);
  }

  button(text, label, onclick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    b.setAttribute('aria-label', label);
    b.onclick = onclick;
    return b;
  }

  async play(name) {
    try {
      const clip = await (await request(`voices/${encodeURIComponent(name)}/audio`)).blob();
      await this.player.playUrl(URL.createObjectURL(clip));
      this.status(`Playing the voice ${name}.`);
    } catch (e) {
      this.status(`Cannot play ${name}: ${e.message}`, true);
    }
  }

  use(name) {
    $('voice').value = name;
    $('voice').dispatchEvent(new Event('change'));
    this.status(`${name} is the voice of your next take.`);
  }

  async remove(name) {
    if (!confirm(`Delete the voice "${name}" from the server's library? Every user of this server loses it.`)) return;
    try {
      await request(`voices/${encodeURIComponent(name)}`, {method: 'DELETE'});
      await this.load();
      this.status(`Deleted the voice ${name}.`);
    } catch (e) {
      this.status(`Cannot delete ${name}: ${e.message}`, true);
    }
  }

  async save(name, transcript, clip, overwrite) {
    const form = new FormData();
    form.append('name', name);
    form.append('transcript', transcript);
    form.append('overwrite', overwrite ? 'true' : 'false');
    form.append('audio', clip, clip.name || `${name}.wav`);
    await request('voices', {method: 'POST', body: form});
    await this.load();
  }

  async upload() {
    const name = $('up_name').value.trim();
    try {
      await this.save(name, $('up_transcript').value, $('up_file').files[0], $('up_overwrite').checked);
      $('upload_form').reset();
      this.status(`Added the voice ${name}.`);
    } catch (e) {
      const hint = e.message.startsWith('409') ? ' (tick "replace" to overwrite it)' : '';
      this.status(`Cannot add ${name}: ${e.message}${hint}`, true);
    }
  }

  // A take kept as a voice: its PCM as a WAV, its text as the transcript; then it is the selected voice.
  async keep(name, transcript, samples, overwrite) {
    await this.save(name, transcript, new File([wavBlob(samples)], `${name}.wav`, {type: 'audio/wav'}), overwrite);
    this.use(name);
  }
}

// The <option>s of a voice picker: the smart voice, the library's voices, the described (profile:NAME) ones.
export function fillVoicePicker(select, voices, profiles, smartLabel) {
  const current = select.value;
  select.replaceChildren(new Option(smartLabel, ''));
  const group = (label, entries) => {
    if (!entries.length) return;
    const g = document.createElement('optgroup');
    g.label = label;
    g.append(...entries);
    select.append(g);
  };
  group('Library voices', voices.map((v) => {
    const option = new Option(v.synthetic ? `${v.name} (synthetic)` : v.name, v.name);
    option.dataset.synthetic = v.synthetic ? '1' : '';
    return option;
  }));
  group('Described voices (profile.yaml)', profiles.map((p) => {
    const option = new Option(`${p.name} (described)`, p.id);
    option.title = p.description || '';
    return option;
  }));
  select.value = [...select.options].some((o) => o.value === current) ? current : '';
}
