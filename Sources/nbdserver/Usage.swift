// --help and --version text: qemu-nbd's, with our program name and our additions
// (--handshake-limit) in the same style.

enum Usage {
    static func text(_ name: String) -> String {
        """
        Usage: \(name) [OPTIONS] FILE
          or:  \(name) -L [OPTIONS]
        QEMU Disk Network Block Device Utility

          -h, --help                display this help and exit
          -V, --version             output version information and exit

        Connection properties:
          -p, --port=PORT           port to listen on (default `10809')
          -b, --bind=IFACE          interface to bind to (default `0.0.0.0')
          -k, --socket=PATH         path to the unix socket
                                    (default '/var/lock/qemu-nbd-DEVICE')
          -e, --shared=NUM          device can be shared by NUM clients (default '1')
          -t, --persistent          don't exit on the last connection
          -v, --verbose             display extra debugging information
          -x, --export-name=NAME    expose export by name (default is empty string)
          -D, --description=TEXT    export a human-readable description
              --handshake-limit=N   drop clients that do not finish the handshake
                                    within N seconds, 0 for no limit (default 10)

        Exposing part of the image:
          -o, --offset=OFFSET       offset into the image
          -A, --allocation-depth    expose the allocation depth
          -B, --bitmap=NAME         expose a persistent dirty bitmap

        General purpose options:
          -L, --list                list exports available from another NBD server
          --object type,id=ID,...   define an object such as 'secret' for providing
                                    passwords and/or encryption keys
          --tls-creds=ID            use id of an earlier --object to provide TLS
          --tls-authz=ID            use id of an earlier --object to provide
                                    authorization
          -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                                    specify tracing options
          --fork                    fork off the server process and exit the parent
                                    once the server is running
          --pid-file=PATH           store the server's process ID in the given file

        Kernel NBD client support:
          -c, --connect=DEV         connect FILE to the local NBD device DEV
          -d, --disconnect          disconnect the specified device

        Block device options:
          -f, --format=FORMAT       set image format (raw, qcow2, ...)
          -r, --read-only           export read-only
          -s, --snapshot            use FILE as an external snapshot, create a temporary
                                    file with backing_file=FILE, redirect the write to
                                    the temporary one
          -l, --load-snapshot=SNAPSHOT_PARAM
                                    load an internal snapshot inside FILE and export it
                                    as an read-only device, SNAPSHOT_PARAM format is
                                    'snapshot.id=[ID],snapshot.name=[NAME]', or
                                    '[ID_OR_NAME]'
          -n, --nocache             disable host cache
              --cache=MODE          set cache mode used to access the disk image, the
                                    valid options are: 'none', 'writeback' (default),
                                    'writethrough', 'directsync' and 'unsafe'
              --aio=MODE            set AIO mode (native, io_uring or threads)
              --discard=MODE        set discard mode (ignore, unmap)
              --detect-zeroes=MODE  set detect-zeroes mode (off, on, unmap)
              --image-opts          treat FILE as a full set of image options

        """
    }

    static func version(_ name: String) -> String {
        """
        \(name) 7.2.0 (vmtoolkit)
        A qemu-nbd compatible NBD server, written in Swift.
        """
    }
}
