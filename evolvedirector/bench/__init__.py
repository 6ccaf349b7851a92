"""Benchmarks: `evolvedirector bench NAME`. Each benchmark lives in its own module and registers
one command on `bench_app`; each prints its figures, and its last line is machine-readable."""

import typer

bench_app = typer.Typer(help="Benchmarks that print their figures (the last line is machine-readable).",
                        no_args_is_help=True)
