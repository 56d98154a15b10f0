"""A real agent framework on crossline's media streams: pipecat (PyPI
`pipecat-ai`) with its Twilio serializer, in an echo pipeline (the caller's
audio goes straight back), served the way pipecat's Twilio examples do
(FastAPI on uvicorn, `parse_telephony_websocket`, FastAPIWebsocketTransport
with TwilioFrameSerializer).

    pipecat_echo.py PORT SUMMARY_JSON

Serves ws://127.0.0.1:PORT/media. After one call it writes what pipecat
made of the connection to SUMMARY_JSON (the transport type it detected,
the stream and call ids, the custom parameters) and exits. Prints
"listening" once up.
"""
import asyncio
import json
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger

# pipecat logs every frame at DEBUG: only warnings reach the test's stderr
# (set before pipecat is imported, which logs a banner).
logger.remove()
logger.add(sys.stderr, level="WARNING")

from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

port, out = int(sys.argv[1]), sys.argv[2]
summary = {"errors": [], "echoed_frames": 0}
app = FastAPI()
server = None


class Echo(FrameProcessor):
    """The caller's audio, played back to them."""

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            summary["echoed_frames"] += 1
            await self.push_frame(
                OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels)
            )
        else:
            await self.push_frame(frame, direction)


@app.websocket("/media")
async def media(websocket: WebSocket):
    await websocket.accept()
    try:
        transport_type, call_data = await parse_telephony_websocket(websocket)
        summary["transport_type"] = transport_type
        summary["stream_id"] = call_data["stream_id"]
        summary["call_id"] = call_data["call_id"]
        summary["body"] = call_data.get("body", {})
        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"],
            call_sid=call_data["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        pipeline = Pipeline([transport.input(), Echo(), transport.output()])
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client):
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
    except Exception as e:  # reported to the test, which fails on it
        summary["errors"].append(repr(e))
    with open(out, "w") as f:
        json.dump(summary, f)
    server.should_exit = True


async def main():
    global server
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    print("listening", flush=True)
    await serving


asyncio.run(main())
