"""`python -m evolvedirector.testing.offline_servers`: both servers of the offline open-world recipe
in one process, the fake images API (the two teachers of configs/prompts-offline.yaml) and the
scripted chat director, on the ports that config names.

Prints one line per server once both serve (`images: http://127.0.0.1:8801`, then
`chat: http://127.0.0.1:8802/v1`), and serves until SIGINT or SIGTERM (`kill`, Ctrl-C); then exits
0 with one line on stderr.
"""

from __future__ import annotations

import argparse

from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.testing.fake_images_api import FakeImageAPI
from evolvedirector.testing.serve import add_lifetime_option, say_stopped, serve_until_stopped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images-port", type=int, default=8801, help="the fake images API's port (0: a free one)")
    parser.add_argument("--chat-port", type=int, default=8802, help="the chat director's port (0: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="the chat director's seed")
    add_lifetime_option(parser)
    args = parser.parse_args(argv)
    with FakeImageAPI(port=args.images_port) as images, \
            OpenWorldChatServer(seed=args.seed, port=args.chat_port) as chat:
        def announce() -> None:
            print(f"images: {images.url}\nchat: {chat.base_url}", flush=True)

        reason = serve_until_stopped(announce, args.stop_on_stdin_close)
    say_stopped(f"offline servers on {images.url} and {chat.base_url}", reason)


if __name__ == "__main__":
    main()
