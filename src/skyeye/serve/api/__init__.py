"""`skyeye serve`: an OpenAI-compatible chat-completions API over one SkyEye model.

- `media`: image URLs of a request -> images (data: URLs, file:// under an allowed folder; never the network);
- `openai_messages`: an OpenAI request -> the model's own `Conversation`, the image part and the decoding;
- `batcher`: concurrent requests -> batched `ask_many` calls, each row followed token by token;
- `app`: the FastAPI app (auth, limits, errors, responses and server-sent events) and its uvicorn server.
"""
