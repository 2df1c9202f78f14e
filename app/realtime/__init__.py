"""Realtime speech over a WebSocket (/v1/audio/speech/stream): text streamed in, audio per sentence out, one voice
for the whole conversation, barge-in. websocket.py accepts the connection; protocol.py validates messages;
session.py runs one session on model_pool's conversations (TTSService.start_sentence)."""
