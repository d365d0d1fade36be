"""Tools for the people who run and use FTP servers: doctor (client side), firewall rules."""
