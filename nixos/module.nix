# NixOS module for slipway.
#
#   imports = [ ./nixos/module.nix ];
#   services.slipway = {
#     enable = true;
#     package = pkgs.callPackage ./package.nix { };   # or any derivation providing bin/slipway
#     openFirewall = true;
#     adminTokenFile = "/run/keys/slipway-admin-token";
#     settings = {
#       networks = [{ name = "cluster"; interface = "eth1"; cidr = "10.1.107.0/24"; }];
#     };
#   };
#
# An instance of an HA pair or trio (state in etcd, keepalived moving the addresses):
#   services.slipway.settings.store = {
#     backend = "etcd"; endpoints = [ "https://10.0.0.5:2379" ... ];
#     ca = "/etc/slipway/etcd/ca.pem"; cert = "/etc/slipway/etcd/client.pem";
#   };
#   services.slipway.ha = {
#     enable = true;
#     interface = "eth1"; dhcpAddress = "10.1.107.2/24";
#     frontendInterface = "eth0"; frontendAddresses = [ "192.0.2.10/24" ];
#     etcdKeyFile = "/run/keys/etcd-client-key.pem";
#   };
{ config, lib, pkgs, ... }:

let
  cfg = config.services.slipway;
  toml = pkgs.formats.toml { };
  configFile = toml.generate "slipway.toml" cfg.settings;
  # The daemon reads the stable /etc path, so a reload takes the new settings; what only a
  # restart changes (the state directory, the admin listener, the hypervisors, the store)
  # restarts it.
  etcConfig = "/etc/slipway/slipway.toml";
  restartOnly = builtins.toJSON {
    state_dir = cfg.settings.state_dir or null;
    admin = cfg.settings.admin or null;
    hypervisors = cfg.settings.hypervisors or null;
    store = cfg.settings.store or null;
  };
  portOf = addr: lib.toInt (lib.last (lib.splitString ":" addr));
  listens = section: lib.optionals (cfg.settings ? ${section}) (lib.toList cfg.settings.${section}.listen);
  frontendPorts = map (f: portOf f.listen) (cfg.settings.lb.frontends or [ ]);
  # keepalived's checks ask the local admin API (no token: /readyz is open).
  adminListen = cfg.settings.admin.listen or "127.0.0.1:9443";
  adminTls = (cfg.settings.admin or { }) ? tls_cert;
  adminUrl = "${if adminTls then "https" else "http"}://${adminListen}";
  check = path: "${pkgs.curl}/bin/curl -sf -o /dev/null --max-time 1 ${lib.optionalString adminTls "-k "}${adminUrl}${path}";
in
{
  options.services.slipway = {
    enable = lib.mkEnableOption "slipway, the Kubernetes-on-Proxmox provisioning daemon";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The slipway package (must provide bin/slipway).";
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      description = ''
        slipway.toml as a Nix attribute set; see the README's configuration reference.
        state_dir defaults to /var/lib/slipway (the unit's StateDirectory).
      '';
    };

    adminTokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        File holding the admin API token, passed to the daemon as the systemd credential
        `admin-token`. When null, slipway generates one in its state directory.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open DHCP (67/udp), DNS (53), TFTP (69/udp) and the configured HTTP, admin and LB ports (and VRRP with `ha`).";
    };

    ha = {
      enable = lib.mkEnableOption ''
        this instance as one of an HA pair or trio: settings.store must name etcd; keepalived
        moves the DHCP address to the leader and the frontend addresses to a healthy instance
        (the README's "High availability")'';

      interface = lib.mkOption {
        type = lib.types.str;
        example = "eth1";
        description = "The provisioning interface, where the DHCP address floats.";
      };

      dhcpAddress = lib.mkOption {
        type = lib.types.str;
        example = "10.1.107.2/24";
        description = "The floating address (with prefix) DHCP answers from; it follows the leader.";
      };

      virtualRouterId = lib.mkOption {
        type = lib.types.ints.between 1 255;
        default = 107;
        description = "VRRP router ID of the DHCP address (unique on the segment).";
      };

      frontendInterface = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "eth0";
        description = "Where the load balancer's frontend addresses float.";
      };

      frontendAddresses = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "192.0.2.10/24" ];
        description = "The frontends' floating addresses (api, ingress); they stay on a healthy instance.";
      };

      frontendRouterId = lib.mkOption {
        type = lib.types.ints.between 1 255;
        default = 108;
        description = "VRRP router ID of the frontend addresses.";
      };

      etcdKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        description = ''
          slipway's etcd client key, passed as the systemd credential `etcd-client-key`
          (settings.store.key then points at it).
        '';
      };
    };
  };

  config = lib.mkIf cfg.enable {
    # Whole tables under mkIf: a condition on a key alone would still make its (empty) table.
    services.slipway.settings = lib.mkMerge [
      { state_dir = lib.mkDefault "/var/lib/slipway"; }
      (lib.mkIf cfg.ha.enable {
        dhcp.server_addresses = lib.mkDefault [ (lib.head (lib.splitString "/" cfg.ha.dhcpAddress)) ];
      })
      (lib.mkIf (cfg.ha.enable && cfg.ha.etcdKeyFile != null) {
        store.key = "/run/credentials/slipway.service/etcd-client-key";
      })
    ];

    assertions = [{
      assertion = !cfg.ha.enable || (cfg.settings.store.backend or "local") == "etcd";
      message = "services.slipway.ha needs services.slipway.settings.store.backend = \"etcd\" (with endpoints, ca, cert)";
    }];

    services.keepalived = lib.mkIf cfg.ha.enable {
      enable = true;
      enableScriptSecurity = true;
      vrrpScripts = {
        slipway_alive = { script = check "/readyz"; interval = 1; timeout = 2; fall = 1; rise = 1; user = "root"; };
        slipway_leader = { script = check "/readyz?role=leader"; interval = 1; timeout = 2; fall = 1; rise = 1; weight = 50; user = "root"; };
        slipway_ready = { script = check "/readyz"; interval = 1; timeout = 2; fall = 2; rise = 2; user = "root"; };
      };
      vrrpInstances = {
        slipway_dhcp = {
          interface = cfg.ha.interface;
          state = "BACKUP";
          priority = 100;
          virtualRouterId = cfg.ha.virtualRouterId;
          virtualIps = [{ addr = cfg.ha.dhcpAddress; }];
          trackScripts = [ "slipway_alive" "slipway_leader" ];
        };
      } // lib.optionalAttrs (cfg.ha.frontendAddresses != [ ]) {
        slipway_frontends = {
          interface = if cfg.ha.frontendInterface != null then cfg.ha.frontendInterface else cfg.ha.interface;
          state = "BACKUP";
          priority = 100;
          noPreempt = true;
          virtualRouterId = cfg.ha.frontendRouterId;
          virtualIps = map (addr: { inherit addr; }) cfg.ha.frontendAddresses;
          trackScripts = [ "slipway_ready" ];
        };
      };
    };

    environment.systemPackages = [ cfg.package ];
    environment.etc."slipway/slipway.toml".source = configFile;

    systemd.services.slipway = {
      description = "slipway: DHCP, DNS, network boot, load balancing and cluster lifecycle";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # Changed settings reload the daemon (`systemctl reload`); restart-only ones restart it.
      reloadTriggers = [ configFile ];
      restartTriggers = [ restartOnly ];
      environment.SLIPWAY_LOG_FORMAT = "json";
      serviceConfig = {
        Type = "notify";
        ExecStartPre = "${cfg.package}/bin/slipway check --config ${etcConfig}";
        ExecStart = "${cfg.package}/bin/slipway serve --config ${etcConfig}";
        # SIGHUP, sent by slipway itself; the daemon applies the file whole or logs every problem.
        ExecReload = "${cfg.package}/bin/slipway reload --pid $MAINPID";
        Restart = "on-failure";
        TimeoutStopSec = "10s";
        DynamicUser = true;
        StateDirectory = "slipway";
        StateDirectoryMode = "0700";
        LoadCredential = lib.optional (cfg.adminTokenFile != null) "admin-token:${cfg.adminTokenFile}"
          ++ lib.optional (cfg.ha.enable && cfg.ha.etcdKeyFile != null) "etcd-client-key:${cfg.ha.etcdKeyFile}";
        # A crashed instance is back as the standby quickly (the other leads meanwhile).
        RestartSec = if cfg.ha.enable then "1s" else "2s";
        CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" ];
        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" ];
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        UMask = "0077";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" "AF_PACKET" ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
        SystemCallErrorNumber = "EPERM";
        DevicePolicy = "closed";
        LimitNOFILE = 65536;
        TasksMax = 512;
      };
    };

    networking.firewall = lib.mkIf cfg.openFirewall {
      # VRRP between the instances.
      extraCommands = lib.optionalString cfg.ha.enable "iptables -A nixos-fw -p vrrp -j nixos-fw-accept";
      allowedUDPPorts = [ 67 69 ] ++ lib.optionals (cfg.settings ? dns) (map portOf (listens "dns"));
      allowedTCPPorts = map portOf (listens "dns" ++ listens "http" ++ (lib.optional (cfg.settings ? admin && cfg.settings.admin ? listen) cfg.settings.admin.listen)) ++ frontendPorts;
    };
  };
}
