// Takes kept in the browser (IndexedDB), so the list survives a reload: each take's settings and figures, and its
// audio (PCM16) within AUDIO_BUDGET bytes. Over the budget the oldest takes lose their audio but keep everything
// else: their seed and settings make the same audio again (Re-run).
'use strict';

export const AUDIO_BUDGET = 64e6; // bytes: 22 minutes of 24 kHz 16-bit audio
export const MAX_TAKES = 200;

const DB = 'higgs-playground';
let opened = null;

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function finished(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

function db() {
  if (!opened) {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore('takes', {keyPath: 'id'});
      request.result.createObjectStore('audio');
    };
    opened = done(request);
  }
  return opened;
}

export async function allTakes() {
  const tx = (await db()).transaction('takes');
  const takes = await done(tx.objectStore('takes').getAll());
  return takes.sort((a, b) => a.id - b.id);
}

export async function saveTake(take) {
  const tx = (await db()).transaction('takes', 'readwrite');
  tx.objectStore('takes').put(take);
  await finished(tx);
}

// The take's audio (and the clip it was cloned from, for a re-run), then the budget: returns the takes whose
// audio went, oldest first, with `audioKept` false.
export async function saveAudio(take, samples, clip = null) {
  take.audioBytes = samples.byteLength + (clip ? clip.size : 0);
  take.audioKept = true;
  const tx = (await db()).transaction(['takes', 'audio'], 'readwrite');
  tx.objectStore('audio').put({samples: samples.slice().buffer, clip}, take.id);
  tx.objectStore('takes').put(take);
  await finished(tx);
  return enforceBudget(take.id);
}

async function enforceBudget(newest) {
  const takes = await allTakes();
  let used = takes.filter((t) => t.audioKept).reduce((sum, t) => sum + (t.audioBytes || 0), 0);
  const dropped = [];
  const removed = [];
  for (const take of takes) {
    if (takes.length - removed.length > MAX_TAKES) {
      removed.push(take);
      if (take.audioKept) used -= take.audioBytes || 0;
      continue;
    }
    if (used <= AUDIO_BUDGET) break;
    if (take.id === newest || !take.audioKept) continue;
    used -= take.audioBytes || 0;
    take.audioKept = false;
    dropped.push(take);
  }
  const tx = (await db()).transaction(['takes', 'audio'], 'readwrite');
  for (const take of dropped) {
    tx.objectStore('audio').delete(take.id);
    tx.objectStore('takes').put(take);
  }
  for (const take of removed) {
    tx.objectStore('audio').delete(take.id);
    tx.objectStore('takes').delete(take.id);
  }
  await finished(tx);
  return {dropped, removed};
}

export async function loadAudio(id) {
  const tx = (await db()).transaction('audio');
  const record = await done(tx.objectStore('audio').get(id));
  return record ? {samples: new Int16Array(record.samples), clip: record.clip} : null;
}

export async function deleteTake(id) {
  const tx = (await db()).transaction(['takes', 'audio'], 'readwrite');
  tx.objectStore('takes').delete(id);
  tx.objectStore('audio').delete(id);
  await finished(tx);
}

export async function clearTakes() {
  const tx = (await db()).transaction(['takes', 'audio'], 'readwrite');
  tx.objectStore('takes').clear();
  tx.objectStore('audio').clear();
  await finished(tx);
}

export async function audioUsed() {
  return (await allTakes()).filter((t) => t.audioKept).reduce((sum, t) => sum + (t.audioBytes || 0), 0);
}
