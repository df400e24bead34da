"""The response cache shared by chat, batch and serve: keys, stores and SSE replay."""
