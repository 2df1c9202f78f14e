// Runs the generateAudio() function of examples/javascript_client.html under Node (fetch, atob, Blob are
// built in), with stand-ins for the page's DOM and Audio, against a live server given as argv[2].
import { readFileSync } from 'node:fs';

const html = readFileSync(new URL('../../examples/javascript_client.html', import.meta.url), 'utf8');
const script = html.match(/<script>([\s\S]*?)<\/script>/)[1];
const values = { server: process.argv[2], text: 'Hello from the JavaScript client.', voice: 'belinda' };
const elements = {};
globalThis.document = {
  getElementById: (id) => (elements[id] ??= { value: values[id] ?? '', textContent: '', onclick: null }),
};
let played = null;
globalThis.Audio = class { constructor(url) { played = url; } play() { return Promise.resolve(); } };
globalThis.URL.createObjectURL = (blob) => { globalThis.lastBlob = blob; return 'blob:test'; };

const generateAudio = new Function(`${script}; return generateAudio;`)();
const result = await generateAudio(values.text, values.voice);
const bytes = new Uint8Array(await globalThis.lastBlob.arrayBuffer());
const riff = String.fromCharCode(...bytes.slice(0, 4)) + String.fromCharCode(...bytes.slice(8, 12));
console.log(JSON.stringify({ success: result.success, riff, bytes: bytes.length, played,
  status: elements.status.textContent, duration: result.duration }));
