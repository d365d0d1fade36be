"""Sans-IO FTP protocol layer: bytes in, events and bytes out.

Nothing here touches sockets or asyncio, so the server, the client and the
tests share one exhaustively tested implementation of the wire format.
"""

from ketch.protocol.addresses import (
    AddressSyntaxError,
    HostPort,
    UnsupportedFamilyError,
    address_family_number,
    format_eprt_argument,
    format_epsv_reply,
    format_host_port,
    format_pasv_reply,
    format_port_argument,
    parse_eprt_argument,
    parse_epsv_argument,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_port_argument,
    plain_ip,
)
from ketch.protocol.ascii import AsciiDecoder, AsciiEncoder
from ketch.protocol.commands import (
    Command,
    CommandLineReader,
    LineTooLong,
    decode_argument,
    encode_text,
)
from ketch.protocol.listing import (
    FileFacts,
    format_list_line,
    format_listing,
    format_mdtm,
    format_name_list,
    format_nlst_line,
)
from ketch.protocol.remote_listing import (
    MlsdSyntaxError,
    RemoteEntry,
    RemoteListing,
    parse_list,
    parse_list_line,
    parse_mlsd,
    parse_mlsd_line,
)
from ketch.protocol.replies import Reply, ReplyParser, ReplySyntaxError, format_reply
from ketch.protocol.reply_values import parse_feat, parse_mdtm_value, parse_quoted_path

__all__ = [
    "AddressSyntaxError",
    "AsciiDecoder",
    "AsciiEncoder",
    "Command",
    "CommandLineReader",
    "FileFacts",
    "HostPort",
    "LineTooLong",
    "MlsdSyntaxError",
    "RemoteEntry",
    "RemoteListing",
    "Reply",
    "ReplyParser",
    "ReplySyntaxError",
    "UnsupportedFamilyError",
    "address_family_number",
    "decode_argument",
    "encode_text",
    "format_eprt_argument",
    "format_epsv_reply",
    "format_host_port",
    "format_list_line",
    "format_listing",
    "format_mdtm",
    "format_name_list",
    "format_nlst_line",
    "format_pasv_reply",
    "format_port_argument",
    "format_reply",
    "parse_eprt_argument",
    "parse_epsv_argument",
    "parse_epsv_reply",
    "parse_feat",
    "parse_list",
    "parse_list_line",
    "parse_mdtm_value",
    "parse_mlsd",
    "parse_mlsd_line",
    "parse_pasv_reply",
    "parse_port_argument",
    "parse_quoted_path",
    "plain_ip",
]
