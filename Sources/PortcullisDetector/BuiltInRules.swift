/// Portcullis's own sshd decoder and rules, written in Wazuh's XML format so that one
/// evaluator runs them and Wazuh's files alike. The ids, levels, descriptions and the
/// shape of the tree (5700 groups every sshd message; 5760 refines 5710 and 5716; the
/// frequency rules count their parents) are Wazuh's, so `<rules_id>` in an ossec.conf
/// means the same here; the patterns are Portcullis's.
///
/// The decoder's expressions are pcre2 and anchored to the end sshd writes: a user name
/// is the attacker's to choose and may itself hold " from 192.0.2.1 port 1", so the
/// address taken is always the one sshd wrote last. They also read what Wazuh's decoder
/// misses, such as an empty user name (`Invalid user  from ...`).
enum BuiltInRules {
    static let sshd = #"""
    <decoder name="sshd">
      <program_name type="pcre2">^sshd(?:-session)?$</program_name>
    </decoder>

    <decoder name="sshd-invalid-user">
      <parent>sshd</parent>
      <regex type="pcre2">^(?:Invalid|Illegal) user (.*) from (\S+)(?: port (\d+))?\s*$</regex>
      <order>srcuser, srcip, srcport</order>
    </decoder>
    <decoder name="sshd-failed-invalid-user">
      <parent>sshd</parent>
      <regex type="pcre2">^Failed \S+ for (?:invalid|illegal) user (.*) from (\S+)(?: port (\d+))?(?: ssh2)?(?: \[preauth\])?\s*$</regex>
      <order>srcuser, srcip, srcport</order>
    </decoder>
    <decoder name="sshd-failed">
      <parent>sshd</parent>
      <regex type="pcre2">^Failed \S+ for (.*) from (\S+)(?: port (\d+))?(?: ssh2)?(?: \[preauth\])?\s*$</regex>
      <order>dstuser, srcip, srcport</order>
    </decoder>
    <decoder name="sshd-postponed-invalid-user">
      <parent>sshd</parent>
      <regex type="pcre2">^Postponed \S+ for (?:invalid|illegal) user (.*) from (\S+)(?: port (\d+))?(?: ssh2)?(?: \[preauth\])?\s*$</regex>
      <order>srcuser, srcip, srcport</order>
    </decoder>
    <decoder name="sshd-closed-invalid-user">
      <parent>sshd</parent>
      <regex type="pcre2">^(?:Disconnected from|Connection (?:closed|reset) by) (?:invalid|illegal) user (.*) (\S+) port (\d+)(?: \[preauth\])?\s*$</regex>
      <order>srcuser, srcip, srcport</order>
    </decoder>
    <decoder name="sshd-pam-illegal-user">
      <parent>sshd</parent>
      <regex type="pcre2">^(?:error: )?PAM: (?:User not known to the underlying authentication module|unknown user|[Aa]uthentication (?:error|failure)) for (?:illegal|invalid) user (.*) from (\S+)\s*$</regex>
      <order>srcuser, srcip</order>
    </decoder>
    <decoder name="sshd-pam-failure">
      <parent>sshd</parent>
      <regex type="pcre2">^error: PAM: [Aa]uthentication (?:error|failure) for (.*) from (\S+)\s*$</regex>
      <order>dstuser, srcip</order>
    </decoder>
    <decoder name="sshd-denied-user">
      <parent>sshd</parent>
      <regex type="pcre2">^User (.*) from (\S+) not allowed because (?:(?! from ).)*$</regex>
      <order>dstuser, srcip</order>
    </decoder>
    <decoder name="sshd-max-attempts">
      <parent>sshd</parent>
      <regex type="pcre2">^error: maximum authentication attempts exceeded for (?:invalid user )?(.*) from (\S+) port (\d+)(?: ssh2)?(?: \[preauth\])?\s*$</regex>
      <order>dstuser, srcip, srcport</order>
    </decoder>
    <decoder name="sshd-bad-protocol">
      <parent>sshd</parent>
      <regex type="pcre2">^Bad protocol version identification .* from (\S+)(?: port (\d+))?\s*$</regex>
      <order>srcip, srcport</order>
    </decoder>
    <decoder name="sshd-no-identification">
      <parent>sshd</parent>
      <regex type="pcre2">^Did not receive identification string from (\S+)(?: port (\d+))?\s*$</regex>
      <order>srcip, srcport</order>
    </decoder>
    <decoder name="sshd-reverse-mapping">
      <parent>sshd</parent>
      <regex type="pcre2">^reverse mapping checking getaddrinfo for [^\s\[\]]+ \[([0-9A-Fa-f:.]+)\] failed</regex>
      <order>srcip</order>
    </decoder>

    <group name="syslog,sshd,">
      <rule id="5700" level="0" noalert="1">
        <decoded_as>sshd</decoded_as>
        <description>SSHD messages grouped.</description>
      </rule>

      <rule id="5701" level="8">
        <if_sid>5700</if_sid>
        <match>Bad protocol version identification</match>
        <description>sshd: Possible attack on the ssh server (or version gathering).</description>
        <group>recon,</group>
      </rule>

      <rule id="5702" level="5">
        <if_sid>5700</if_sid>
        <match>^reverse mapping</match>
        <regex>failed - POSSIBLE BREAK</regex>
        <description>sshd: Reverse lookup error (bad ISP or attack).</description>
      </rule>

      <rule id="5703" level="10" frequency="6" timeframe="360">
        <if_matched_sid>5702</if_matched_sid>
        <same_source_ip />
        <description>sshd: Possible breakin attempt (high number of reverse lookup errors).</description>
      </rule>

      <rule id="5706" level="6">
        <if_sid>5700</if_sid>
        <match>Did not receive identification string from</match>
        <description>sshd: insecure connection attempt (scan).</description>
        <group>recon,</group>
      </rule>

      <rule id="5710" level="5">
        <if_sid>5700</if_sid>
        <match>illegal user|invalid user</match>
        <description>sshd: Attempt to login using a non-existent user</description>
        <group>invalid_login,authentication_failed,</group>
      </rule>

      <!-- sshd writes these beside the "Invalid user" line that carries the address; level 0
           rules are tried first, so they are silenced, as in Wazuh. -->
      <rule id="5711" level="0">
        <if_sid>5700</if_sid>
        <match>input_userauth_request: invalid user|PAM: User not known to the underlying authentication module for illegal user</match>
        <description>sshd: Useless/Duplicated SSHD message without a user/ip.</description>
      </rule>

      <rule id="5712" level="10" frequency="8" timeframe="120" ignore="60">
        <if_matched_sid>5710</if_matched_sid>
        <same_source_ip />
        <description>sshd: brute force trying to get access to the system. Non existent user.</description>
        <group>authentication_failures,</group>
      </rule>

      <rule id="5716" level="5">
        <if_sid>5700</if_sid>
        <match>^Failed|^error: PAM: Authentication</match>
        <description>sshd: authentication failed.</description>
        <group>authentication_failed,</group>
      </rule>

      <rule id="5718" level="5">
        <if_sid>5700</if_sid>
        <match>not allowed because</match>
        <description>sshd: Attempt to login using a denied user.</description>
        <group>invalid_login,</group>
      </rule>

      <rule id="5719" level="10" frequency="8" timeframe="120" ignore="60">
        <if_matched_sid>5718</if_matched_sid>
        <description>sshd: Multiple access attempts using a denied user.</description>
        <group>invalid_login,</group>
      </rule>

      <rule id="5720" level="10" frequency="8">
        <if_matched_sid>5716</if_matched_sid>
        <same_source_ip />
        <description>sshd: Multiple authentication failures.</description>
        <group>authentication_failures,</group>
      </rule>

      <!-- Messages that carry nothing to act on: recognised, so that logtest can say so. Tried
           before every alerting sibling, so "Connection closed by invalid user ..." is silenced
           here as in Wazuh; the attempt itself is sshd's "Invalid user" line. -->
      <rule id="5721" level="0">
        <if_sid>5700</if_sid>
        <match>Received disconnect from</match>
        <description>sshd: System disconnected from sshd.</description>
      </rule>

      <rule id="5722" level="0">
        <if_sid>5700</if_sid>
        <match>Connection closed</match>
        <description>sshd: ssh connection closed.</description>
      </rule>

      <rule id="5758" level="8">
        <if_sid>5700,5710</if_sid>
        <match>^error: maximum authentication attempts exceeded </match>
        <description>Maximum authentication attempts exceeded.</description>
        <group>authentication_failed,</group>
      </rule>

      <rule id="5760" level="5">
        <if_sid>5700,5710,5716</if_sid>
        <match>Failed password|Failed keyboard|authentication error</match>
        <description>sshd: authentication failed.</description>
        <group>authentication_failed,</group>
      </rule>

      <rule id="5761" level="0">
        <if_sid>5700</if_sid>
        <match>Disconnected from user</match>
        <description>sshd: ssh connection closed.</description>
      </rule>

      <rule id="5763" level="10" frequency="8" timeframe="120" ignore="60">
        <if_matched_sid>5760</if_matched_sid>
        <same_source_ip />
        <description>sshd: brute force trying to get access to the system. Authentication failed.</description>
        <group>authentication_failures,</group>
      </rule>
    </group>
    """#
}
