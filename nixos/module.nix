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
{ config, lib, pkgs, ... }:

let
  cfg = config.services.slipway;
  toml = pkgs.formats.toml { };
  configFile = toml.generate "slipway.toml" cfg.settings;
  # The daemon reads the stable /etc path, so a reload takes the new settings; what only a
  # restart changes (the state directory, the admin listener, the hypervisors) restarts it.
  etcConfig = "/etc/slipway/slipway.toml";
  restartOnly = builtins.toJSON {
    state_dir = cfg.settings.state_dir or null;
    admin = cfg.settings.admin or null;
    hypervisors = cfg.settings.hypervisors or null;
  };
  portOf = addr: lib.toInt (lib.last (lib.splitString ":" addr));
  listens = section: lib.optionals (cfg.settings ? ${section}) (lib.toList cfg.settings.${section}.listen);
  frontendPorts = map (f: portOf f.listen) (cfg.settings.lb.frontends or [ ]);
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
      description = "Open DHCP (67/udp), DNS (53), TFTP (69/udp) and the configured HTTP, admin and LB ports.";
    };
  };

  config = lib.mkIf cfg.enable {
    services.slipway.settings.state_dir = lib.mkDefault "/var/lib/slipway";

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
        RestartSec = "2s";
        TimeoutStopSec = "10s";
        DynamicUser = true;
        StateDirectory = "slipway";
        StateDirectoryMode = "0700";
        LoadCredential = lib.optional (cfg.adminTokenFile != null) "admin-token:${cfg.adminTokenFile}";
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
      allowedUDPPorts = [ 67 69 ] ++ lib.optionals (cfg.settings ? dns) (map portOf (listens "dns"));
      allowedTCPPorts = map portOf (listens "dns" ++ listens "http" ++ (lib.optional (cfg.settings ? admin && cfg.settings.admin ? listen) cfg.settings.admin.listen)) ++ frontendPorts;
    };
  };
}
