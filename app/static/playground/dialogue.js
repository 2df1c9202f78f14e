// The dialogue helper: one row per speaker, with a button that puts its [SPEAKERn] tag into the text and a voice
// picker. A text with tags is sent with the speakers' voices as one comma-separated ref_audio, in speaker order:
// the server matches them by position, so either every speaker up to the last tag has a voice, or none has.
'use strict';

import {fillVoicePicker} from './playground?asset=library.js';

const MAX_SPEAKERS = 8; // the server's HIGGS_MAX_SPEAKERS default
const TAG = /\[SPEAKER(\d+)\]/g;

export class Dialogue {
  constructor(text, list, addButton) {
    this.text = text;
    this.list = list;
    this.voices = [];
    this.profiles = [];
    addButton.onclick = () => this.add().querySelector('select').focus();
    this.addButton = addButton;
    this.add();
    this.add();
  }

  get rows() {
    return [...this.list.children];
  }

  add() {
    const i = this.rows.length;
    const li = document.createElement('li');
    const insert = document.createElement('button');
    insert.type = 'button';
    insert.textContent = `Insert [SPEAKER${i}]`;
    insert.onclick = () => this.insert(i);
    const label = document.createElement('label');
    label.textContent = `Voice of SPEAKER${i} `;
    const select = document.createElement('select');
    select.id = `speaker${i}_voice`;
    fillVoicePicker(select, this.voices, this.profiles, 'smart voice');
    label.append(select);
    li.append(insert, ' ', label);
    this.list.append(li);
    this.addButton.disabled = this.rows.length >= MAX_SPEAKERS;
    return li;
  }

  setVoices(voices, profiles) {
    this.voices = voices;
    this.profiles = profiles;
    for (const row of this.rows) fillVoicePicker(row.querySelector('select'), voices, profiles, 'smart voice');
  }

  insert(i) {
    const t = this.text;
    const at = t.selectionStart;
    const before = t.value.slice(0, at);
    const lead = before === '' || before.endsWith('\n') ? '' : '\n';
    const tag = `${lead}[SPEAKER${i}] `;
    t.setRangeText(tag, at, t.selectionEnd, 'end');
    t.dispatchEvent(new Event('input'));
    t.focus();
  }

  // The speaker tags in the text, and the voice setting they make: {ref_audio, label} or {error}.
  voicesFor(text) {
    const tags = [...text.matchAll(TAG)].map((m) => Number(m[1]));
    if (!tags.length) return null;
    const last = Math.max(...tags);
    if (last >= this.rows.length) {
      return {error: `the text has [SPEAKER${last}]: add speakers in the dialogue helper up to SPEAKER${last}`};
    }
    const picked = this.rows.slice(0, last + 1).map((row) => row.querySelector('select').value);
    if (picked.every((v) => v === '')) return {ref_audio: null, label: 'smart voices per speaker'};
    if (picked.some((v) => v === '')) {
      return {error: 'pick a voice for every speaker up to the last tag, or leave them all on the smart voice'};
    }
    return {ref_audio: picked.join(','), label: `voices ${picked.join(', ')}`};
  }
}
