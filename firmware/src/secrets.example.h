// Copy to secrets.h (ignored by git) and fill in. The MQTT user and password are the ones
// in the Secret named by the SensorNode's spec.credentials.secretRef.
#pragma once

#define PW_WIFI_SSID "plant-wifi"
#define PW_WIFI_PASSWORD "change-me"
#define PW_MQTT_HOST "192.168.10.2"
#define PW_MQTT_PORT 1883
#define PW_MQTT_USER "esp32-press-01"
#define PW_MQTT_PASSWORD "change-me"
#define PW_DEVICE_ID "esp32-press-01"  // SensorNode spec.deviceId (or its name)
#define PW_AREA "hall-1"               // topic: sensors/<area>/<device>/data
#define PW_INTERVAL_MS 1000            // SensorNode spec.heartbeat.interval
