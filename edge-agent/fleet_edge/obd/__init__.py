"""OBD-II through an ELM327: declarative PID table, pure answer parsing, asyncio driver, poller."""
