"""ketch: an FTP server, client library and command-line tools on asyncio."""

__version__ = "0.1.0"
