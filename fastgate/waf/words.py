"""Command names the command-injection detector knows (written for FastGate, not taken from
any rule set). Three groups by how much a bare mention means:

* STRONG_COMMANDS: names that are no English word; after a shell separator they count alone.
* ENGLISH_COMMANDS: commands that are also words people write ("time", "find", "more"); they
  need shell evidence after them.
* WINDOWS_COMMANDS: cmd.exe built-ins and tools, treated like the English ones.
"""

STRONG_COMMANDS = frozenset("""
flock cpulimit rmt-dump ansible-pull bsdtar cscli chef-shell lastlogin ansible-lint sshpass
whoami ifconfig ipconfig uname netstat nslookup wget curl bash zsh ksh csh tcsh ncat netcat
socat telnet ssh scp sftp rsync tftp chmod chown chgrp chattr lsattr passwd sudo visudo
sudoedit crontab useradd usermod userdel adduser deluser groupadd gpasswd xxd hexdump awk
gawk nawk mawk sed nodejs luajit tclsh gcc g++ clang c89 c99 gdb strace ltrace nohup setsid
xargs busybox printenv ls tac grep egrep fgrep zgrep rgrep zcat bzcat xzcat zstdcat zless
zmore pstree htop pkill killall lsof umount mkfifo mknod rmdir mkdir whois traceroute
tracepath arp iptables ip6tables nft nmap masscan tcpdump tshark systemctl journalctl dmesg
lastlog lastb hostnamectl uptime lsb_release dpkg apt-get aptitude zypper kubectl podman
crictl ansible ansible-playbook ansible-config ansible-console ansible-inventory ansible-vault ansible-galaxy ansible-doc chef-client chef-solo chef-vault chef-run chef-shell salt-call vim nvim emacs printf md5sum sha1sum sha256sum sha512sum sendmail w3m aria2c lwp-download lwp-request lwp-mirror javac jrunscript jjs rmt rmt-tar perf tmux run-parts start-stop-daemon rpm2cpio cpio readlink realpath chroot renice ionice taskset unshare nsenter
capsh setcap getcap getfacl setfacl iconv xclip ssh-keygen ssh-keyscan ssh-agent ssh-add
mysqldump psql pg_dump mongosh redis-cli ldapsearch smbclient rpcclient enum4linux hashcat
msfconsole msfvenom sqlmap nikto gobuster dirb wfuzz ffuf mshta certutil bitsadmin regsvr32
rundll32 wmic wscript cscript schtasks vssadmin wevtutil bcdedit bcdboot icacls cacls xcopy
robocopy findstr tracert quser qwinsta msiexec forfiles cmstp installutil regasm regsvcs
msbuild odbcconf pcalua diskshadow ntdsutil esentutl extrac32 makecab infdefaultinstall
takeown mklink doskey systeminfo tasklist taskkill netsh powershell pwsh regedit fsutil
wmiprvse bash.exe sh.exe psexec procdump mimikatz nltest dsquery csvde ldifde klist setspn
whoami.exe iwr iex irm iwmi gwmi aa-disable aa-enforce aa-complain aa-status apparmor_parser
lsmod insmod rmmod modprobe sysctl ulimit getent ls ifup ifdown iwconfig useradd chpasswd
newgrp visudo vigr vipw pwck grpck nping hping3 arping fping xterm gnome-terminal konsole
lpr ipython jshell cscli mesg rcp rlogin rsh rexec pkexec doas runuser atq atrm anacron
logrotate shuf base58 uuencode uudecode
""".split())

ENGLISH_COMMANDS = frozenset("""
cat tar zip gzip gunzip bzip2 xz zstd 7z base64 base32 openssl gpg history shred rpm yum dnf apk snap pacman mutt lynx axel groovy lp pdb rhino pinky nl sqlite3 unzip unxz unzstd bunzip2 7za
python python2 python3 ruby php perl lua docker mysql screen expect finger wall write cancel groups strings route ftp dash ash wish nc cc ps id dig nano su lp ip sh cut sort uniq tee dd od env cron wsl salt puppet knife reg sc cmd net1 john hydra mongo irb pry scl
time top find more less head tail kill ping date file make last w who users host info man
watch yes seq fold column comm diff paste split stat install at batch script mail read
source export alias type echo print sleep eval exec open run go java node expect ed ex vi
nice link test true false rev trap logger service mount touch rm mv cp ln du df free
locate which whereis hostname timeout command builtin let local declare unset shift
tr join look sum env id ps pwd cd clear reset set tput stty git svn hg pip pip3 npm npx
yarn gem cargo go apt snap brew flatpak mkdir cat uniq sort cut wc tee dd bc dc od nl
zip jar ar as ld nm rsh top patch unzip
""".split())

WINDOWS_COMMANDS = frozenset("""
dir copy move del erase rd ren rename md type attrib start call ver vol label shutdown
logoff runas wusa dism sfc chkdsk cipher compact subst assoc ftype pushd popd title color
cls query control explorer expand hh net whoami ipconfig systeminfo tasklist taskkill
bcdboot bcdedit regedit reg sc wmic set goto pause choice timeout setx where tree more
find sort print replace xcopy path prompt endlocal setlocal exit
""".split())

# Commands that, as the whole value and nothing else, only an attacker sends (reconnaissance).
BARE_COMMANDS = frozenset("""
whoami ifconfig ipconfig visudo netstat uname systeminfo tasklist printenv hostnamectl lastlog
lastb getent ansible-console ansible-inventory ansible-vault ansible-config chef-vault chef-run
lsb_release dmesg sudoedit net1 qwinsta quser nltest klist whoami.exe cscli chef-shell
chef-client chef-solo ansible-pull ansible-playbook ansible-galaxy ansible-doc
""".split())
